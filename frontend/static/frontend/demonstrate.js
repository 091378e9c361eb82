// Writing demonstrations: the rater sees a prompt and writes the reply the assistant should give.
// The text box keeps the focus, so every shortcut uses a modifier: Ctrl+Enter submits, Alt+S moves on,
// Alt+G shows the guidelines.

import { api, drawConversation, showError, whileBusy } from "./server.js";

const root = document.getElementById("demonstrate");
const $ = (id) => document.getElementById(id);
let prompt = null;
let submissionId = null;
const state = { busy: false };
let written = 0;
const passedOver = [];

async function loadNext() {
  showError("");
  const query = passedOver.length ? `?exclude=${passedOver.join(",")}` : "";
  try {
    prompt = await api(root.dataset.csrf, root.dataset.nextUrl + query, { method: "GET" });
  } catch (error) {
    showError(error.message);
    return;
  }
  if (prompt === null) {
    $("task").hidden = true;
    $("done").hidden = false;
    return;
  }
  submissionId = crypto.randomUUID();
  $("conversation").replaceChildren();
  drawConversation($("conversation"), prompt.conversation);
  $("reply").value = "";
  $("task").hidden = false;
  $("reply").focus();
  $("status").textContent = `${written} written in this session`;
}

async function submit() {
  if (!prompt) return;
  await whileBusy(state, $("submit"), async () => {
    const text = $("reply").value;
    if (!text.trim()) throw new Error("Write a reply before submitting.");
    const path = `${root.dataset.apiRoot}prompts/${prompt.prompt_id}/demonstrations`;
    await api(root.dataset.csrf, path, { body: { text, client_submission_id: submissionId }, attempts: 3 });
    written += 1;
    await loadNext();
  });
}

function passOver() {
  if (!prompt) return;
  passedOver.push(prompt.prompt_id);
  loadNext();
}

document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
    event.preventDefault();
    submit();
  } else if (event.altKey && event.code === "KeyS") {
    event.preventDefault();
    passOver();
  } else if (event.altKey && event.code === "KeyG") {
    event.preventDefault();
    $("guidelines").hidden = !$("guidelines").hidden;
  }
});
root.addEventListener("click", (event) => {
  const action = event.target.closest("button")?.dataset.action;
  if (action === "submit") submit();
  else if (action === "skip") passOver();
  else if (action === "guidelines") $("guidelines").hidden = !$("guidelines").hidden;
});
loadNext();
