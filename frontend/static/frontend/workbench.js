// The rater's workbench: compare, rank, rate and flag responses, keyboard first.
// Talks to the same JSON API that scripts use: POST next task, POST judgement, skip, report.
// Response and prompt HTML comes sanitised from the server; everything else is inserted as text.

import { api, drawConversation, showError, whileBusy } from "./server.js";

const root = document.getElementById("workbench");
const $ = (id) => document.getElementById(id);
const FLAGS = JSON.parse($("flag-names").textContent);

let task = null;
let submissionId = null;
let step = "judge"; // "rate" (Likert and flags) then "judge" (compare or rank)
let cursor = 0; // the response the rating keys act on
let flagMode = false;
let tiePending = false; // "=" then a number ties it with the last rank
let ranking = []; // groups of response ids, best first
let verdict = null; // compare: "a", "b", "tie" or "bad"
let strength = null; // compare: 1, 2 or 3
let likert = {};
let flags = {};
const state = { busy: false };
let submitted = 0;
let timer = null;

function setStatus(text) {
  $("status").textContent = text;
}

// --- loading and drawing a task ----------------------------------------------------------------------------

async function loadNext() {
  showError("");
  try {
    task = await api(root.dataset.csrf, root.dataset.nextUrl);
  } catch (error) {
    showError(error.message);
    return;
  }
  if (task === null) {
    $("task").hidden = true;
    $("done").hidden = false;
    clearInterval(timer);
    setStatus(`${submitted} submitted in this session`);
    return;
  }
  submissionId = crypto.randomUUID();
  ranking = [];
  verdict = null;
  strength = null;
  likert = {};
  flags = {};
  cursor = 0;
  flagMode = false;
  tiePending = false;
  step = task.rate ? "rate" : "judge";
  $("rationale").value = "";
  draw();
  startTimer();
  window.scrollTo(0, 0);
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function draw() {
  $("done").hidden = true;
  $("task").hidden = false;

  const conversation = $("conversation");
  conversation.replaceChildren(el("h2", { text: "Conversation" }));
  drawConversation(conversation, task.conversation);

  const responses = $("responses");
  responses.className = `responses ${task.kind === "compare" ? "side-by-side" : "grid"}`;
  responses.replaceChildren();
  task.responses.forEach((response, index) => {
    const body = el("div", { class: "md" });
    body.innerHTML = response.html; // sanitised on the server
    const card = el(
      "article",
      { class: "response card", id: `response-${response.id}`, "data-id": response.id, "data-index": index },
      el("header", {}, el("span", { class: "badge", text: response.label }), el("span", { class: "place muted" })),
      body,
    );
    if (task.rate) card.append(ratingControls(response));
    responses.append(card);
  });

  $("compare-panel").hidden = task.kind !== "compare";
  $("rank-panel").hidden = task.kind !== "rank";
  fillDiffPickers();
  if (!$("diff").hidden) drawDiff();
  refresh();
}

function ratingControls(response) {
  const scale = el("div", { class: "likert", role: "radiogroup", "aria-label": `Score for ${response.label}` });
  for (let score = 1; score <= 7; score++) {
    const button = el("button", { type: "button", "data-score": score, role: "radio", text: String(score) });
    button.addEventListener("click", () => setScore(response.id, score));
    scale.append(button);
  }
  const flagList = el("div", { class: "flags", "aria-label": `Flags for ${response.label}` });
  FLAGS.forEach(([value, label], index) => {
    const button = el("button", { type: "button", class: "flag", "data-flag": value, "aria-pressed": "false" });
    button.append(el("kbd", { text: String(index + 1) }), ` ${label}`);
    button.addEventListener("click", () => toggleFlag(response.id, value));
    flagList.append(button);
  });
  return el(
    "div",
    { class: "rating" },
    el("div", { class: "muted", text: "Score 1 (very bad) to 7 (excellent)" }),
    scale,
    el("div", { class: "muted flags-title", text: "Flags (F, then a number)" }),
    flagList,
  );
}

function labelOf(id) {
  return task.responses.find((response) => response.id === id).label;
}

function refresh() {
  // Rating state.
  task.responses.forEach((response, index) => {
    const card = $(`response-${response.id}`);
    card.classList.toggle("current", step === "rate" && index === cursor);
    card.classList.toggle("flag-mode", step === "rate" && index === cursor && flagMode);
    card.querySelectorAll("[data-score]").forEach((button) => {
      button.setAttribute("aria-checked", String(likert[response.id] === Number(button.dataset.score)));
    });
    card.querySelectorAll("[data-flag]").forEach((button) => {
      button.setAttribute("aria-pressed", String((flags[response.id] || []).includes(button.dataset.flag)));
    });
    const place = ranking.findIndex((group) => group.includes(response.id));
    card.querySelector(".place").textContent = task.kind === "rank" && place >= 0 ? `rank ${place + 1}` : "";
  });

  // Compare state.
  document.querySelectorAll("[data-choice]").forEach((button) => {
    button.setAttribute("aria-checked", String(button.dataset.choice === verdict));
  });
  document.querySelectorAll("[data-strength]").forEach((button) => {
    button.setAttribute("aria-checked", String(Number(button.dataset.strength) === strength));
    button.disabled = verdict === "tie" || verdict === "bad";
  });

  // Ranking state.
  if (task.kind === "rank") drawRanking();

  const steps = task.rate && task.kind !== "rate";
  const what = { compare: "choose the better response", rank: "rank the responses", rate: "rate each response" };
  $("step").textContent =
    steps && step === "rate"
      ? "Step 1 of 2: rate each response, then Enter"
      : steps
        ? `Step 2 of 2: ${what[task.kind]}`
        : `${what[task.kind][0].toUpperCase()}${what[task.kind].slice(1)}`;
  $("submit").textContent = "";
  $("submit").append(steps && step === "rate" ? "Next " : "Submit ", el("kbd", { text: "Enter" }));
}

// --- ranking (keys and drag and drop) ----------------------------------------------------------------------

function chip(id) {
  const node = el("span", { class: "chip", draggable: "true", "data-id": id, text: labelOf(id) });
  node.addEventListener("dragstart", (event) => event.dataTransfer.setData("text/plain", String(id)));
  return node;
}

function dropZone(node, onDrop) {
  node.addEventListener("dragover", (event) => {
    event.preventDefault();
    node.classList.add("over");
  });
  node.addEventListener("dragleave", () => node.classList.remove("over"));
  node.addEventListener("drop", (event) => {
    event.preventDefault();
    node.classList.remove("over");
    const id = Number(event.dataTransfer.getData("text/plain"));
    if (task.responses.some((response) => response.id === id)) onDrop(id);
  });
}

function removeFromRanking(id) {
  ranking = ranking.map((group) => group.filter((other) => other !== id)).filter((group) => group.length);
}

function drawRanking() {
  const list = $("ranking");
  list.replaceChildren();
  const gap = (position) => {
    const zone = el("li", { class: "gap drop", "aria-hidden": "true" });
    dropZone(zone, (id) => {
      removeFromRanking(id);
      ranking.splice(Math.min(position, ranking.length), 0, [id]);
      refresh();
    });
    return zone;
  };
  list.append(gap(0));
  ranking.forEach((group, index) => {
    const row = el("li", { class: "group drop" }, el("span", { class: "muted", text: `${index + 1}.` }));
    group.forEach((id) => row.append(chip(id)));
    if (group.length > 1) row.append(el("span", { class: "muted", text: "(tied)" }));
    dropZone(row, (id) => {
      const target = ranking[index];
      removeFromRanking(id);
      const at = ranking.indexOf(target);
      if (at >= 0) ranking[at].push(id);
      else ranking.push([id]);
      refresh();
    });
    list.append(row, gap(index + 1));
  });
  const pool = $("pool");
  pool.replaceChildren(
    ...task.responses.map((response) => response.id).filter((id) => !ranking.some((group) => group.includes(id))).map(chip),
  );
}

function place(index, tie) {
  const response = task.responses[index];
  if (!response) return;
  removeFromRanking(response.id);
  if (tie && ranking.length) ranking[ranking.length - 1].push(response.id);
  else ranking.push([response.id]);
  refresh();
}

// --- rating ------------------------------------------------------------------------------------------------

function setScore(id, score) {
  likert[id] = score;
  refresh();
}

function toggleFlag(id, value) {
  const current = flags[id] || [];
  flags[id] = current.includes(value) ? current.filter((flag) => flag !== value) : [...current, value];
  refresh();
}

// --- submitting --------------------------------------------------------------------------------------------

function judgement() {
  const ids = task.responses.map((response) => response.id);
  if (task.rate && ids.some((id) => likert[id] === undefined)) {
    throw new Error("Score every response from 1 to 7 first.");
  }
  const body = {
    client_submission_id: submissionId,
    likert: Object.fromEntries(Object.entries(likert).map(([id, score]) => [String(id), score])),
    flags: Object.fromEntries(Object.entries(flags).filter(([, names]) => names.length)),
    rationale: $("rationale").value,
  };
  if (task.kind === "compare") {
    if (!verdict) throw new Error("Choose A, B, tie or both bad.");
    const [a, b] = ids;
    body.ranking = { a: [[a], [b]], b: [[b], [a]], tie: [[a, b]], bad: [[a, b]] }[verdict];
    body.all_bad = verdict === "bad";
    body.margin = verdict === "a" || verdict === "b" ? strength : null;
  } else if (task.kind === "rank") {
    if (ranking.flat().length !== ids.length) throw new Error("Place every response in the ranking first.");
    body.ranking = ranking;
  }
  return body;
}

async function submit() {
  if (!task) return;
  await whileBusy(state, $("submit"), async () => {
    const body = judgement();
    await api(root.dataset.csrf, `${root.dataset.apiRoot}tasks/${task.task_id}/judgements`, { body, attempts: 3 });
    submitted += 1;
    await loadNext();
  });
}

function advance() {
  if (step === "rate" && task.kind !== "rate") {
    const unscored = task.responses.findIndex((response) => likert[response.id] === undefined);
    if (unscored >= 0) {
      cursor = unscored;
      showError("Score every response from 1 to 7 first.");
      refresh();
      return;
    }
    showError("");
    step = "judge";
    flagMode = false;
    refresh();
    return;
  }
  submit();
}

function ask(title) {
  const dialog = $("ask");
  $("ask-title").textContent = title;
  $("ask-text").value = "";
  dialog.showModal();
  $("ask-text").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" ? $("ask-text").value.trim() : null),
      { once: true },
    );
  });
}

async function leave(kind) {
  if (!task || state.busy) return;
  const text = await ask(kind === "skip" ? "Why do you skip this task?" : "What is wrong with this task?");
  if (!text) return;
  await whileBusy(state, $("submit"), async () => {
    const path = `${root.dataset.apiRoot}tasks/${task.task_id}/${kind === "skip" ? "skip" : "problems"}`;
    const body = kind === "skip" ? { reason: text } : { message: text };
    await api(root.dataset.csrf, path, { body, attempts: 3 });
    await loadNext();
  });
}

// --- word diff ---------------------------------------------------------------------------------------------

function fillDiffPickers() {
  const [left, right] = [$("diff-left"), $("diff-right")];
  for (const [select, index] of [
    [left, 0],
    [right, 1],
  ]) {
    select.replaceChildren(...task.responses.map((response) => el("option", { value: response.id, text: response.label })));
    select.value = String(task.responses[Math.min(index, task.responses.length - 1)].id);
  }
}

function wordDiff(before, after) {
  const a = before.split(/(\s+)/).filter(Boolean);
  const b = after.split(/(\s+)/).filter(Boolean);
  if (a.length * b.length > 4_000_000) return null;
  const width = b.length + 1;
  const lengths = new Uint32Array((a.length + 1) * width);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i * width + j] =
        a[i] === b[j] ? lengths[(i + 1) * width + j + 1] + 1 : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
    }
  }
  const parts = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) parts.push(["same", a[i++]]), j++;
    else if (j < b.length && (i === a.length || lengths[i * width + j + 1] >= lengths[(i + 1) * width + j])) parts.push(["ins", b[j++]]);
    else parts.push(["del", a[i++]]);
  }
  return parts;
}

function drawDiff() {
  const byId = (id) => task.responses.find((response) => String(response.id) === id);
  const left = byId($("diff-left").value);
  const right = byId($("diff-right").value);
  const parts = wordDiff(left.text, right.text);
  const body = $("diff-body");
  if (parts === null) {
    body.replaceChildren(el("p", { class: "muted", text: "These responses are too long to compare word by word." }));
    return;
  }
  body.replaceChildren(...parts.map(([kind, text]) => (kind === "same" ? document.createTextNode(text) : el(kind, { text }))));
}

function toggle(id) {
  $(id).hidden = !$(id).hidden;
  if (id === "diff" && !$(id).hidden && task) drawDiff();
}

// --- the lease timer ---------------------------------------------------------------------------------------

function startTimer() {
  clearInterval(timer);
  const tick = () => {
    const left = Math.max(0, Math.round((new Date(task.expires_at) - new Date()) / 1000));
    const clock = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    setStatus(`Task ${task.task_id} · ${left ? `${clock} left` : "time is up, submit soon"} · ${submitted} submitted`);
  };
  tick();
  timer = setInterval(tick, 1000);
}

// --- keys --------------------------------------------------------------------------------------------------

function digitOf(event) {
  const match = /^(?:Digit|Numpad)(\d)$/.exec(event.code);
  return match ? Number(match[1]) : null;
}

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) {
    if (event.key === "Enter" && event.target === $("rationale")) {
      event.preventDefault();
      advance();
    }
    return;
  }
  if (document.querySelector("dialog[open]")) {
    const dialog = document.querySelector("dialog[open]");
    if (dialog.id === "ask" && event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      if ($("ask-text").value.trim()) dialog.close("ok");
    }
    return; // Esc closes dialogs natively
  }
  if (event.target.matches("textarea, input, select")) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (!task || $("task").hidden) {
    if (event.key === "?") $("help").showModal();
    return;
  }
  const key = event.key.toLowerCase();
  const digit = digitOf(event);
  let handled = true;

  if (event.key === "?") $("help").showModal();
  else if (key === "g") toggle("guidelines");
  else if (key === "d") toggle("diff");
  else if (key === "n") $("rationale").focus();
  else if (key === "s") leave("skip");
  else if (key === "p") leave("report");
  else if (event.key === "Enter") advance();
  else if (step === "rate") {
    const current = task.responses[cursor];
    if (key === "f") flagMode = !flagMode;
    else if (event.key === "ArrowRight" || key === "k") cursor = Math.min(cursor + 1, task.responses.length - 1);
    else if (event.key === "ArrowLeft" || key === "j") cursor = Math.max(cursor - 1, 0);
    else if (digit !== null && flagMode && digit >= 1 && digit <= FLAGS.length) toggleFlag(current.id, FLAGS[digit - 1][0]);
    else if (digit !== null && !flagMode && digit >= 1 && digit <= 7) {
      setScore(current.id, digit);
      cursor = Math.min(cursor + 1, task.responses.length - 1);
    } else handled = false;
    refresh();
  } else if (task.kind === "compare") {
    if (["a", "b"].includes(key)) verdict = key;
    else if (key === "t") verdict = "tie";
    else if (key === "x") verdict = "bad";
    else if (digit !== null && digit >= 1 && digit <= 3) strength = strength === digit ? null : digit;
    else handled = false;
    refresh();
  } else if (task.kind === "rank") {
    if (event.key === "=") tiePending = true;
    else if (digit !== null && digit >= 1 && digit <= task.responses.length) {
      place(digit - 1, event.shiftKey || tiePending);
      tiePending = false;
    } else if (digit === 0) {
      ranking = [];
      refresh();
    } else if (event.key === "Backspace") {
      if (ranking.length) ranking[ranking.length - 1].pop();
      ranking = ranking.filter((group) => group.length);
      refresh();
    } else handled = false;
  } else handled = false;

  if (handled) event.preventDefault();
}

// --- wiring ------------------------------------------------------------------------------------------------

document.addEventListener("keydown", onKey);
root.addEventListener("click", (event) => {
  const target = event.target.closest("button");
  if (!target) return;
  const action = target.dataset.action;
  if (action === "submit") advance();
  else if (action === "skip") leave("skip");
  else if (action === "report") leave("report");
  else if (action === "help") $("help").showModal();
  else if (action === "guidelines") toggle("guidelines");
  else if (action === "diff") toggle("diff");
  else if (action === "close") target.closest("dialog").close();
  else if (target.dataset.choice) {
    verdict = target.dataset.choice;
    refresh();
  } else if (target.dataset.strength) {
    const value = Number(target.dataset.strength);
    strength = strength === value ? null : value;
    refresh();
  }
});
$("diff-left").addEventListener("change", drawDiff);
$("diff-right").addEventListener("change", drawDiff);
setupPool();
loadNext();

function setupPool() {
  dropZone($("pool"), (id) => {
    removeFromRanking(id);
    refresh();
  });
}
