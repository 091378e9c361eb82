// Settling a disagreement: the reviewer reads the conversation, the responses (A, B, ...) and every judgement
// (raters unnamed), then builds the final ranking with the keyboard, as in the workbench: a letter places a
// response next, Shift+letter ties it with the one before, Backspace takes the last back, Enter records it;
// S sends the task back for one more judgement.

import { api, drawConversation, showError, whileBusy } from "./server.js";

const root = document.getElementById("adjudicate");
const $ = (id) => document.getElementById(id);
const state = { busy: false };
let review = null;
let groups = []; // the ranking being built: groups of response ids, best first
let settled = 0;

const labelOf = (id) => review.responses.find((response) => response.id === id)?.label ?? "?";
const rankingText = (ranking) => ranking.map((group) => group.map(labelOf).join(" = ")).join(" > ");

function say(text) {
  $("dock-message").textContent = text;
}

function drawRanking() {
  const placed = groups.flat().length;
  $("ranking").textContent = placed
    ? `${rankingText(groups)}${placed < review.responses.length ? " …" : ""}`
    : "Press the letters of the responses, best first.";
}

function drawResponses() {
  const box = $("responses");
  box.replaceChildren();
  for (const response of review.responses) {
    const card = document.createElement("article");
    card.className = "card response";
    const heading = document.createElement("h2");
    heading.textContent = `Response ${response.label}`;
    const body = document.createElement("div");
    body.className = "md";
    body.innerHTML = response.html; // sanitised on the server
    card.append(heading, body);
    box.append(card);
  }
}

function drawJudgements() {
  const rows = review.judgements.map((judgement) => {
    const row = document.createElement("tr");
    const cells = [
      judgement.rater,
      judgement.all_bad ? `${rankingText(judgement.ranking)} (all bad)` : rankingText(judgement.ranking),
      judgement.margin ?? "",
      judgement.rationale, // the rater's words, shown as text
    ];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.append(cell);
    }
    return row;
  });
  $("judgements").querySelector("tbody").replaceChildren(...rows);
}

async function loadNext() {
  showError("");
  try {
    review = await api(root.dataset.csrf, root.dataset.nextUrl, { method: "GET" });
  } catch (error) {
    showError(error.message);
    return;
  }
  if (review === null) {
    $("task").hidden = true;
    $("done").hidden = false;
    $("status").textContent = `${settled} settled in this session`;
    return;
  }
  groups = [];
  $("reason").textContent = review.reason;
  $("conversation").replaceChildren();
  drawConversation($("conversation"), review.conversation);
  drawResponses();
  drawJudgements();
  drawRanking();
  say("");
  $("task").hidden = false;
  $("status").textContent = `${settled} settled in this session`;
}

function place(label, tie) {
  const response = review.responses.find((candidate) => candidate.label === label);
  if (!response) return;
  if (groups.flat().includes(response.id)) {
    say(`${label} is placed already: Backspace takes the last one back.`);
    return;
  }
  if (tie && groups.length) groups[groups.length - 1].push(response.id);
  else groups.push([response.id]);
  say("");
  drawRanking();
}

async function settle(body) {
  await whileBusy(state, $("decide"), async () => {
    await api(root.dataset.csrf, `${root.dataset.apiRoot}reviews/${review.review_id}/decision`, { body, attempts: 3 });
    settled += 1;
    await loadNext();
  });
}

function decide() {
  if (!review) return;
  if (groups.flat().length < review.responses.length) {
    say("Place every response in the ranking first.");
    return;
  }
  settle({ ranking: groups });
}

document.addEventListener("keydown", (event) => {
  if (!review || event.ctrlKey || event.metaKey || event.altKey) return;
  const letter = event.code.startsWith("Key") ? event.code.slice(3) : "";
  if (event.key === "Enter") {
    event.preventDefault();
    decide();
  } else if (event.key === "Backspace") {
    event.preventDefault();
    const last = groups[groups.length - 1];
    if (last) last.pop();
    if (last && !last.length) groups.pop();
    drawRanking();
  } else if (letter === "S" && !event.shiftKey) {
    event.preventDefault();
    settle({ send_back: true });
  } else if (letter) {
    place(letter, event.shiftKey);
  }
});
root.addEventListener("click", (event) => {
  const action = event.target.closest("button")?.dataset.action;
  if (action === "decide") decide();
  else if (action === "send-back") settle({ send_back: true });
});
loadNext();
