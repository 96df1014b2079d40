// chat-view.js — builds the chat page's DOM from data.
//
// Every piece of text that came from a user or the server is set with
// textContent (or an attribute set through the DOM API), never parsed as
// HTML: a message "<img src=x onerror=alert(1)>" shows exactly that.

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

/** A stable hue for a user name, so each person keeps a colour. */
export function hueFor(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

/** Accepts ms or s since the epoch (number or numeric string) or an ISO date. */
export function toDate(value) {
  if (value === undefined || value === null || value === "") return null;
  const n = typeof value === "number" ? value : Number(value);
  if (Number.isFinite(n)) return new Date(n < 1e12 ? n * 1000 : n);
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : new Date(parsed);
}

export function formatTime(date, now = new Date()) {
  if (!date) return "";
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

function messageNode(msg, me) {
  const item = el("li", "msg");
  item.dataset.id = String(msg.id);
  if (msg.user === me) item.classList.add("own");
  item.style.setProperty("--user-hue", String(hueFor(msg.user)));
  const meta = el("div", "msg-meta");
  meta.append(el("span", "msg-user", String(msg.user ?? "?")));
  const date = toDate(msg.at);
  const time = el("time", "msg-time", formatTime(date));
  if (date) {
    time.dateTime = date.toISOString();
    time.title = date.toLocaleString();
  }
  meta.append(time);
  item.append(meta, el("p", "msg-text", String(msg.text ?? "")));
  return item;
}

/** Renders the list; keeps the view pinned to the bottom if it was (or if `stick`). */
export function renderMessages(scroller, list, empty, messages, me, { appendOnly = false, stick = false } = {}) {
  const atBottom = stick || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  if (appendOnly) {
    list.append(messageNode(messages[messages.length - 1], me));
  } else {
    list.replaceChildren(...messages.map((msg) => messageNode(msg, me)));
  }
  empty.hidden = messages.length > 0;
  if (atBottom) scroller.scrollTop = scroller.scrollHeight;
}

/** Folds presence into one row per user: tabs, earliest online_at, typing. */
export function summarizePresence(entries) {
  return entries.map(({ user, metas }) => {
    const dates = metas.map((m) => toDate(m.online_at)).filter(Boolean);
    return {
      user,
      tabs: metas.length,
      since: dates.length ? new Date(Math.min(...dates.map(Number))) : null,
      typing: metas.some((m) => m.typing === true),
    };
  }).sort((a, b) => a.user.localeCompare(b.user));
}

export function renderPeople(listEl, countEl, people, me, emptyText = "Waiting for the list of who is here…") {
  const tabs = people.reduce((sum, p) => sum + p.tabs, 0);
  countEl.textContent = people.length ? `${people.length} ${people.length === 1 ? "user" : "users"} · ${tabs} ${tabs === 1 ? "tab" : "tabs"}` : "";
  if (people.length === 0) {
    listEl.replaceChildren(el("li", "muted", emptyText));
    return;
  }
  listEl.replaceChildren(...people.map((p) => {
    const item = el("li", "person");
    item.dataset.user = p.user;
    item.style.setProperty("--user-hue", String(hueFor(p.user)));
    const name = el("span", "person-name", p.user);
    if (p.user === me) name.append(el("span", "you", " (you)"));
    const detail = el("span", "person-detail",
      `${p.tabs} ${p.tabs === 1 ? "tab" : "tabs"}${p.since ? ` · online since ${formatTime(p.since)}` : ""}`);
    item.append(el("span", "presence-dot"), name, detail);
    if (p.typing) item.append(el("span", "person-typing", "typing…"));
    return item;
  }));
}

export function typingSentence(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

/**
 * Shows a notice; one with the same `key` is replaced. Kinds: info, restart,
 * reload, error. `detail` is a second, monospace line (e.g. file:line:col).
 */
export function notify(container, { key, kind = "info", text, detail, timeoutMs = 0 }) {
  if (key) for (const old of container.querySelectorAll(".notice")) if (old.dataset.key === key) old.remove();
  const box = el("div", `notice notice-${kind}`);
  if (key) box.dataset.key = key;
  // The container is a polite live region; errors interrupt.
  if (kind === "error") box.setAttribute("role", "alert");
  const body = el("div", "notice-body");
  body.append(el("p", "notice-text", text));
  if (detail) body.append(el("p", "notice-detail mono", detail));
  const close = el("button", "notice-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", `Dismiss: ${text}`);
  close.addEventListener("click", () => box.remove());
  box.addEventListener("keydown", (event) => { if (event.key === "Escape") box.remove(); });
  box.append(body, close);
  container.append(box);
  while (container.children.length > 5) container.firstElementChild.remove();
  if (timeoutMs > 0) setTimeout(() => box.remove(), timeoutMs);
  return box;
}

export function dismiss(container, key) {
  for (const old of container.querySelectorAll(".notice")) if (old.dataset.key === key) old.remove();
}
