// chat-view.js — builds the chat page's DOM from data.
//
// Every piece of text that came from a user or the server is set with
// textContent (or an attribute set through the DOM API), never parsed as
// HTML: a message "<img src=x onerror=alert(1)>" shows exactly that. Links
// in messages are <a> elements built here, only for http(s) addresses.

import { toDate, formatTime, formatFullTime } from "./time-format.js";

export { toDate, formatTime };

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

/**
 * Name colours: ten hues far apart on the colour wheel (red, orange, yellow,
 * lime, green, teal, blue, violet, fuchsia, pink), each with at least 4.5:1
 * contrast (WCAG AA for text) on the light and the dark page; style.css
 * holds the colours as .user-c0 … .user-c9. Two users get the same colour
 * only when their names hash to the same one of the ten, never a near twin.
 */
export const USER_COLOURS = 10;

/** A stable palette index for a user name, so each person keeps a colour. */
export function colourFor(name) {
  let hash = 0;
  for (const ch of String(name)) hash = (Math.imul(hash, 31) + ch.codePointAt(0)) >>> 0;
  // Mix the bits, so names that differ in their last letter spread too.
  hash = Math.imul(hash ^ (hash >>> 16), 0x45d9f3b) >>> 0;
  return ((hash ^ (hash >>> 16)) >>> 0) % USER_COLOURS;
}

function setUserColour(node, user) {
  node.classList.add(`user-c${colourFor(user)}`);
}

// An http(s) address up to whitespace or a character that cannot end one
// in running text; trailing punctuation is trimmed below.
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = /[.,;:!?'"]+$/;

/** Drops a trailing ")" or "]" that has no opening partner inside the link. */
function trimUnbalanced(text) {
  let out = text.replace(TRAILING, "");
  for (const [open, close] of [["(", ")"], ["[", "]"]]) {
    while (out.endsWith(close) && out.split(open).length < out.split(close).length) {
      out = out.slice(0, -1).replace(TRAILING, "");
    }
  }
  return out;
}

/**
 * Splits a message's text into parts: `{text}` for plain text and
 * `{text, href}` for an http(s) link (the address the URL parser
 * normalised). Nothing else becomes a link: javascript:, data: or a
 * "https://" with no host stay text.
 */
export function splitLinks(text) {
  const parts = [];
  let at = 0;
  for (const match of String(text).matchAll(URL_RE)) {
    const candidate = trimUnbalanced(match[0]);
    let url = null;
    try { url = new URL(candidate); } catch { url = null; }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) continue;
    if (match.index > at) parts.push({ text: text.slice(at, match.index) });
    parts.push({ text: candidate, href: url.href });
    at = match.index + candidate.length;
  }
  if (at < String(text).length) parts.push({ text: String(text).slice(at) });
  return parts;
}

function messageText(text) {
  const p = el("p", "msg-text");
  for (const part of splitLinks(text)) {
    if (!part.href) {
      p.append(document.createTextNode(part.text));
      continue;
    }
    const a = el("a", "msg-link", part.text);
    a.href = part.href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    p.append(a);
  }
  return p;
}

function messageNode(msg, me) {
  const item = el("li", "msg");
  item.dataset.id = String(msg.id);
  if (msg.user === me) item.classList.add("own");
  const meta = el("div", "msg-meta");
  const user = el("span", "msg-user", String(msg.user ?? "?"));
  setUserColour(user, msg.user);
  meta.append(user);
  const date = toDate(msg.at);
  const time = el("time", "msg-time", formatTime(date));
  if (date) {
    time.dateTime = date.toISOString();
    time.title = formatFullTime(date);
  }
  meta.append(time);
  item.append(meta, messageText(String(msg.text ?? "")));
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
    const name = el("span", "person-name", p.user);
    setUserColour(name, p.user);
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
