// The rater's workbench: compare, rank, rate and flag responses, keyboard first.
// Talks to the same JSON API that scripts use: POST next task, POST judgement, skip, report.
// Response and prompt HTML comes sanitised from the server; everything else is inserted as text.
// The verdict or the ranking, and Submit, sit in a dock that stays at the bottom of the window (app.css):
// what the rater sees of the task is the window above that dock.

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

// --- messages ----------------------------------------------------------------------------------------------
// A message stands beside the control that needs the rater, in a live region so that screen readers announce
// it, and lasts until the rater changes their judgement (refresh clears it).

function clearMessages() {
  document.querySelectorAll("#task .message").forEach((box) => {
    box.textContent = "";
  });
}

function say(box, text) {
  clearMessages();
  box.textContent = text;
}

// A failed call: beside Submit while a task is on screen, at the top of the page otherwise.
function fail(text) {
  if ($("task").hidden) showError(text);
  else say($("dock-message"), text);
}

// --- loading and drawing a task ----------------------------------------------------------------------------

async function loadNext() {
  showError("");
  let next;
  try {
    next = await api(root.dataset.csrf, root.dataset.nextUrl);
  } catch (error) {
    fail(error.message);
    return;
  }
  show(next);
}

// Put a task on screen (null: nothing is left).
function show(next) {
  task = next;
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
      el(
        "header",
        {},
        el("span", { class: "badge", text: response.label }),
        el("span", { class: "place muted" }),
        el("span", { class: "scored muted" }),
      ),
      body,
    );
    if (task.rate) card.append(ratingControls(response));
    responses.append(card);
  });

  fillDiffPickers();
  if (!$("diff").hidden) drawDiff();
  refresh();
}

function ratingControls(response) {
  const message = el("p", { class: "message", id: `message-${response.id}`, "aria-live": "assertive" });
  const scale = el("div", {
    class: "likert",
    role: "group",
    "aria-label": `Score for ${response.label}`,
    "aria-describedby": message.id,
  });
  for (let score = 1; score <= 7; score++) {
    const button = el("button", { type: "button", "data-score": score, "aria-pressed": "false", text: String(score) });
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
    el("div", { class: "score" }, scale, message),
    el("div", { class: "muted flags-title", text: "Flags (F, then a number)" }),
    flagList,
  );
}

function labelOf(id) {
  return task.responses.find((response) => response.id === id).label;
}

function refresh() {
  clearMessages();

  // Rating state.
  task.responses.forEach((response, index) => {
    const card = $(`response-${response.id}`);
    card.classList.toggle("current", step === "rate" && index === cursor);
    card.classList.toggle("flag-mode", step === "rate" && index === cursor && flagMode);
    card.querySelectorAll("[data-score]").forEach((button) => {
      button.setAttribute("aria-pressed", String(likert[response.id] === Number(button.dataset.score)));
    });
    card.querySelectorAll("[data-flag]").forEach((button) => {
      button.setAttribute("aria-pressed", String((flags[response.id] || []).includes(button.dataset.flag)));
    });
    const place = ranking.findIndex((group) => group.includes(response.id));
    card.querySelector(".place").textContent = task.kind === "rank" && place >= 0 ? `rank ${place + 1}` : "";
    card.querySelector(".scored").textContent = likert[response.id] ? `scored ${likert[response.id]}` : "";
  });

  // The comparison or the ranking joins the dock once rating is done (at once when the project does not rate).
  $("compare-panel").hidden = !(step === "judge" && task.kind === "compare");
  $("rank-panel").hidden = !(step === "judge" && task.kind === "rank");

  // Compare state.
  document.querySelectorAll("[data-choice]").forEach((button) => {
    button.setAttribute("aria-pressed", String(button.dataset.choice === verdict));
  });
  document.querySelectorAll("[data-strength]").forEach((button) => {
    button.setAttribute("aria-pressed", String(Number(button.dataset.strength) === strength));
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

// --- the response in view ----------------------------------------------------------------------------------
// The rating keys act on the current response, which is outlined and kept on screen: scoring one moves on to
// the next and scrolls just enough to show its start; scrolling away carries the cursor to the response the
// rater now sees; and a key pressed while the current response is off screen brings it into view first.

function cardAt(index) {
  return $(`response-${task.responses[index].id}`);
}

// The part of the window the rater sees: from its top to the top of the dock.
function visibleArea() {
  return { top: 0, bottom: Math.min(window.innerHeight, $("dock").getBoundingClientRect().top) };
}

function shownHeight(node) {
  const box = node.getBoundingClientRect();
  const view = visibleArea();
  return Math.max(0, Math.min(box.bottom, view.bottom) - Math.max(box.top, view.top));
}

// In view: a quarter of the node shows, or it fills a quarter of what the rater sees.
function inView(node) {
  const view = visibleArea();
  return shownHeight(node) >= Math.min(node.getBoundingClientRect().height, view.bottom - view.top) / 4;
}

// Scroll as little as shows the whole node, or its start (40% of the window) when it is taller than that.
function bringIntoView(node) {
  const margin = 16;
  const box = node.getBoundingClientRect();
  const view = visibleArea();
  const want = Math.min(box.height, (view.bottom - view.top) * 0.4);
  if (box.top < view.top + margin) window.scrollBy(0, box.top - view.top - margin);
  else if (box.top + want > view.bottom - margin) window.scrollBy(0, box.top + want - view.bottom + margin);
}

// When the current response has left the screen, the response the rater sees most of becomes current.
function followView() {
  if (!task || step !== "rate" || $("task").hidden || inView(cardAt(cursor))) return false;
  let best = -1;
  let bestShown = 0;
  task.responses.forEach((_, index) => {
    const shown = shownHeight(cardAt(index));
    if (shown > bestShown) [best, bestShown] = [index, shown];
  });
  if (best < 0 || !inView(cardAt(best))) return false;
  cursor = best;
  return true;
}

let followPending = false;
function onScroll() {
  if (followPending) return;
  followPending = true;
  requestAnimationFrame(() => {
    followPending = false;
    if (followView()) refresh();
  });
}

// The dock floats over the end of the page: scrolling into view (focus, a found word) stops above it.
function onDockResize() {
  document.documentElement.style.scrollPaddingBottom = `${$("dock").offsetHeight + 16}px`;
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

// A rating key (a score, F and a flag, J/K): on the response in view, brought into view first if need be.
function onRatingKey(key, digit) {
  const move = { ArrowRight: 1, k: 1, ArrowLeft: -1, j: -1 }[key];
  const flag = flagMode && digit >= 1 && digit <= FLAGS.length;
  const score = !flagMode && digit >= 1 && digit <= 7;
  if (!(key === "f" || move || flag || score)) return false;

  followView();
  if (!inView(cardAt(cursor))) bringIntoView(cardAt(cursor));
  const current = task.responses[cursor];
  let moveTo = null;
  if (key === "f") flagMode = !flagMode;
  else if (move) moveTo = cursor + move;
  else if (flag) toggleFlag(current.id, FLAGS[digit - 1][0]);
  else {
    setScore(current.id, digit);
    moveTo = cursor + 1;
  }
  moveTo = moveTo === null ? null : Math.max(0, Math.min(moveTo, task.responses.length - 1));
  if (moveTo !== null && moveTo !== cursor) {
    cursor = moveTo;
    bringIntoView(cardAt(cursor));
  }
  refresh();
  return true;
}

// --- submitting --------------------------------------------------------------------------------------------

// What Enter still needs before it can go on (the message and where it goes), or null.
function missing() {
  const unscored = task.rate ? task.responses.findIndex((response) => likert[response.id] === undefined) : -1;
  if (unscored >= 0) return { text: "Score every response from 1 to 7 first.", response: unscored };
  if (step === "rate" && task.kind !== "rate") return null;
  if (task.kind === "compare" && !verdict) return { text: "Choose A, B, tie or both bad.", box: $("compare-message") };
  if (task.kind === "rank" && ranking.flat().length !== task.responses.length) {
    return { text: "Place every response in the ranking first.", box: $("rank-message") };
  }
  return null;
}

// Say what is missing beside its control: the verdict and the ranking are in the dock, always on screen; an
// unscored response becomes the current one and its scale comes into view with the message under it.
function point({ text, response, box }) {
  if (response === undefined) {
    say(box, text);
    return;
  }
  cursor = response;
  flagMode = false;
  refresh();
  const card = cardAt(response);
  say(card.querySelector(".message"), text);
  bringIntoView(card.querySelector(".score"));
}

function judgement() {
  const ids = task.responses.map((response) => response.id);
  const body = {
    client_submission_id: submissionId,
    likert: Object.fromEntries(Object.entries(likert).map(([id, score]) => [String(id), score])),
    flags: Object.fromEntries(Object.entries(flags).filter(([, names]) => names.length)),
    rationale: $("rationale").value,
  };
  if (task.kind === "compare") {
    const [a, b] = ids;
    body.ranking = { a: [[a], [b]], b: [[b], [a]], tie: [[a, b]], bad: [[a, b]] }[verdict];
    body.all_bad = verdict === "bad";
    body.margin = verdict === "a" || verdict === "b" ? strength : null;
  } else if (task.kind === "rank") {
    body.ranking = ranking;
  }
  return body;
}

async function submit() {
  const problem = missing();
  if (problem) {
    point(problem);
    return;
  }
  await whileBusy(state, $("submit"), async () => {
    // The answer brings the next task too (one round trip between tasks); without it, ask for it.
    const path = `${root.dataset.apiRoot}tasks/${task.task_id}/judgements?next=true`;
    let answer;
    try {
      answer = await api(root.dataset.csrf, path, { body: judgement(), attempts: 3 });
    } catch (error) {
      fail(error.message);
      return;
    }
    submitted += 1;
    if ("next" in answer) {
      showError("");
      show(answer.next);
    } else await loadNext();
  });
}

function advance() {
  if (!task) return;
  if (step === "rate" && task.kind !== "rate") {
    const problem = missing();
    if (problem) {
      point(problem);
      return;
    }
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
    try {
      await api(root.dataset.csrf, path, { body, attempts: 3 });
    } catch (error) {
      fail(error.message);
      return;
    }
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

// Words with the spaces that follow them: the diff compares words, and keeps the spaces between them.
function words(text) {
  return Array.from(text.matchAll(/(\S+)(\s*)/g), ([, word, space]) => ({ word, space }));
}

// Runs of kept, removed and added words, [{kind: "same" | "del" | "ins", text, space}], where `space` is the
// spacing after the run (the new text's, or the old text's after a removal). A removal comes before the
// addition that replaces it. Null when the texts are too long to compare word by word.
function wordDiff(before, after) {
  const a = words(before);
  const b = words(after);
  if (a.length * b.length > 4_000_000) return null;
  const width = b.length + 1;
  const lengths = new Uint32Array((a.length + 1) * width);
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lengths[i * width + j] =
        a[i].word === b[j].word
          ? lengths[(i + 1) * width + j + 1] + 1
          : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
    }
  }
  const runs = [];
  const add = (kind, token) => {
    const last = runs[runs.length - 1];
    if (last && last.kind === kind) {
      last.text += last.space + token.word;
      last.space = token.space;
    } else runs.push({ kind, text: token.word, space: token.space });
  };
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i].word === b[j].word) {
      add("same", b[j]);
      i++;
      j++;
    } else if (i < a.length && (j === b.length || lengths[(i + 1) * width + j] >= lengths[i * width + j + 1])) {
      add("del", a[i++]);
    } else add("ins", b[j++]);
  }
  return runs;
}

function drawDiff() {
  const byId = (id) => task.responses.find((response) => String(response.id) === id);
  const left = byId($("diff-left").value);
  const right = byId($("diff-right").value);
  const runs = wordDiff(left.text, right.text);
  const body = $("diff-body");
  if (runs === null) {
    body.replaceChildren(el("p", { class: "muted", text: "These responses are too long to compare word by word." }));
    return;
  }
  const nodes = [];
  runs.forEach((run, index) => {
    const next = runs[index + 1];
    nodes.push(run.kind === "same" ? document.createTextNode(run.text) : el(run.kind, { text: run.text }));
    // A removal and the addition that replaces it stand side by side: always a space between them.
    const space = run.kind === "del" && next?.kind === "ins" ? " " : run.space || (next ? " " : "");
    if (space) nodes.push(document.createTextNode(space));
  });
  body.replaceChildren(...nodes);
}

// --- the guidelines and the word diff open and close -------------------------------------------------------

function setOpen(id, open) {
  const opener = document.querySelector(`[aria-controls="${id}"]`);
  // Closing with the focus inside the panel hands the focus back to the button that opens it.
  if (!open && $(id).contains(document.activeElement)) opener.focus();
  $(id).hidden = !open;
  opener.setAttribute("aria-expanded", String(open));
  if (id === "guidelines") document.querySelector(".desk").classList.toggle("with-guidelines", open);
  if (id === "diff" && open && task) drawDiff();
}

function toggle(id) {
  setOpen(id, $(id).hidden);
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
  if (event.key === "Escape" && !$("guidelines").hidden) {
    event.preventDefault();
    setOpen("guidelines", false);
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
  else if (step === "rate") handled = onRatingKey(event.key.startsWith("Arrow") ? event.key : key, digit);
  else if (task.kind === "compare") {
    if (["a", "b"].includes(key)) verdict = key;
    else if (key === "t") verdict = "tie";
    else if (key === "x") verdict = "bad";
    else if (digit !== null && digit >= 1 && digit <= 3) strength = strength === digit ? null : digit;
    else handled = false;
    if (handled) refresh();
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
  else if (action === "guidelines-close") setOpen("guidelines", false);
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
window.addEventListener("scroll", onScroll, { passive: true });
new ResizeObserver(onDockResize).observe($("dock"));
setupPool();
loadNext();

function setupPool() {
  dropZone($("pool"), (id) => {
    removeFromRanking(id);
    refresh();
  });
}
