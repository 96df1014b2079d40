// time-format.js — how the chat page and the dashboard write a time: one
// format for both. A time today is "14:05" (with seconds where a page needs
// them, e.g. console lines: "14:05:09"); another day adds the date,
// "Dec 2 14:05". Always 24-hour, so the chat and the dashboard read alike
// whatever the browser's locale would pick.

const pad = (n) => String(n).padStart(2, "0");

/** Accepts ms or s since the epoch (number or numeric string) or an ISO date. */
export function toDate(value) {
  if (value === undefined || value === null || value === "") return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value;
  const n = typeof value === "number" ? value : Number(value);
  if (Number.isFinite(n)) return new Date(n < 1e12 ? n * 1000 : n);
  const parsed = Date.parse(value);
  return Number.isNaN(parsed) ? null : new Date(parsed);
}

/** "14:05", "14:05:09" with `seconds`, and "Dec 2 14:05" when not `now`'s day. */
export function formatTime(value, { now = new Date(), seconds = false } = {}) {
  const date = toDate(value);
  if (!date) return "";
  const clock = `${pad(date.getHours())}:${pad(date.getMinutes())}${seconds ? `:${pad(date.getSeconds())}` : ""}`;
  if (date.toDateString() === now.toDateString()) return clock;
  const day = date.toLocaleDateString("en-US", { month: "short", day: "numeric" });
  return `${day}${date.getFullYear() === now.getFullYear() ? "" : ` ${date.getFullYear()}`} ${clock}`;
}

/** The full local date and time, for a tooltip. */
export function formatFullTime(value) {
  const date = toDate(value);
  return date ? `${date.toDateString()} ${formatTime(date, { now: date, seconds: true })}` : "";
}
