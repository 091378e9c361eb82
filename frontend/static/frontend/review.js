// Reviewing critique-and-revise chains: the rater reads the conversation, the first answer and each round's
// critique and revision, then accepts the final revision (edited or not) or rejects it. The text box keeps
// the focus, so every shortcut uses a modifier: Ctrl+Enter accepts, Alt+R rejects, Alt+S moves on.

import { api, drawConversation, showError, whileBusy } from "./server.js";

const root = document.getElementById("review");
const $ = (id) => document.getElementById(id);
let chain = null;
const state = { busy: false };
let reviewed = 0;
const passedOver = [];

function drawRounds(rounds) {
  const box = $("rounds");
  box.replaceChildren();
  for (const round of rounds) {
    const heading = document.createElement("h2");
    heading.textContent = `Round ${round.number}: ${round.principle}`;
    const critique = document.createElement("p");
    critique.className = "critique";
    critique.textContent = round.critique; // the model's words, shown as text
    const revision = document.createElement("div");
    revision.className = "md";
    revision.innerHTML = round.revision_html; // sanitised on the server
    box.append(heading, critique, revision);
  }
}

async function loadNext() {
  showError("");
  const query = passedOver.length ? `?exclude=${passedOver.join(",")}` : "";
  try {
    chain = await api(root.dataset.csrf, root.dataset.nextUrl + query, { method: "GET" });
  } catch (error) {
    showError(error.message);
    return;
  }
  if (chain === null) {
    $("task").hidden = true;
    $("done").hidden = false;
    return;
  }
  $("conversation").replaceChildren();
  drawConversation($("conversation"), chain.conversation);
  $("initial").innerHTML = chain.initial_response_html; // sanitised on the server
  drawRounds(chain.rounds);
  $("revision").value = chain.final_revision;
  $("task").hidden = false;
  $("revision").focus();
  $("status").textContent = `${reviewed} reviewed in this session`;
}

async function review(action) {
  if (!chain) return;
  await whileBusy(state, $("accept"), async () => {
    const text = $("revision").value;
    const edited = action === "accept" && text.trim() !== chain.final_revision.trim();
    if (edited && !text.trim()) throw new Error("Write the revision, or reject it.");
    const body = { action: edited ? "edit" : action, text: edited ? text : "" };
    await api(root.dataset.csrf, `${root.dataset.apiRoot}critique-chains/${chain.chain_id}/review`, { body });
    reviewed += 1;
    await loadNext();
  });
}

function passOver() {
  if (!chain) return;
  passedOver.push(chain.chain_id);
  loadNext();
}

document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    event.preventDefault();
    review("accept");
  } else if (event.altKey && event.code === "KeyR") {
    event.preventDefault();
    review("reject");
  } else if (event.altKey && event.code === "KeyS") {
    event.preventDefault();
    passOver();
  }
});
root.addEventListener("click", (event) => {
  const action = event.target.closest("button")?.dataset.action;
  if (action === "accept" || action === "reject") review(action);
  else if (action === "skip") passOver();
});
loadNext();
