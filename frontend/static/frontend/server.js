// What the rater pages share: calls to the JSON API, the error line, and drawing a conversation.

const ROLE_NAMES = { user: "User", assistant: "Assistant", system: "System" };

// A JSON call with the page's CSRF token. `attempts` > 1 resends after a network failure: every write
// carries a client submission id, so the server stores it once however often it arrives.
export async function api(csrf, path, { method = "POST", body, attempts = 1 } = {}) {
  for (let attempt = 1; ; attempt++) {
    let response;
    try {
      response = await fetch(path, {
        method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      if (attempt < attempts) {
        await new Promise((resolve) => setTimeout(resolve, 400 * attempt));
        continue;
      }
      throw new Error("The server cannot be reached. Check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data;
    try {
      data = await response.json();
    } catch {
      data = { message: `The server answered ${response.status}.` };
    }
    if (!response.ok) throw new Error(data.message || `The server answered ${response.status}.`);
    return data;
  }
}

export function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Run `action` once at a time with the submit button disabled, showing any error it throws.
export async function whileBusy(state, button, action) {
  if (state.busy) return;
  state.busy = true;
  button.disabled = true;
  try {
    await action();
  } catch (error) {
    showError(error.message);
  } finally {
    state.busy = false;
    button.disabled = false;
  }
}

// Turns of a conversation; their HTML was sanitised on the server, everything else goes in as text.
export function drawConversation(container, turns) {
  for (const turn of turns) {
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = ROLE_NAMES[turn.role] || turn.role;
    const body = document.createElement("div");
    body.className = "md";
    body.innerHTML = turn.html;
    const row = document.createElement("div");
    row.className = `turn role-${turn.role}`;
    row.append(who, body);
    container.append(row);
  }
}
