// poll: a question with options, one vote per user, live tallies ("poll:<name>").
// Events: "create" {question, options, seconds?}, "vote" {option: index},
// "close" (creator only). With `seconds`, a timer closes the poll by itself;
// GET /rooms/poll:<name>/http/ answers the results as JSON.
let poll = null; // { question, options, by, open, closesAt? }
let votes = {};  // user -> option index; voting again changes the vote

function view() {
  if (!poll) return { poll: null };
  const tallies = poll.options.map(() => 0);
  for (const choice of Object.values(votes)) tallies[choice] += 1;
  return { poll: { ...poll, tallies, voters: Object.keys(votes).length } };
}

function text(value, what, max) {
  const s = String(value ?? "").trim();
  if (s === "" || s.length > max) throw new Error(`${what} must be 1 to ${max} characters`);
  return s;
}

export function onJoin(conn) {
  return { ...view(), myVote: votes[conn.user] ?? null };
}

export function onMessage(conn, event, payload) {
  if (event === "create") {
    if (poll?.open) throw new Error("a poll is already open");
    const options = Array.isArray(payload.options) ? payload.options.map((o) => text(o, "an option", 100)) : [];
    if (options.length < 2 || options.length > 10) throw new Error("a poll needs 2 to 10 options");
    if (new Set(options).size !== options.length) throw new Error("options must differ");
    poll = { question: text(payload.question, "the question", 200), options, by: conn.user, open: true };
    votes = {};
    if (payload.seconds !== undefined) {
      if (!Number.isInteger(payload.seconds) || payload.seconds < 1 || payload.seconds > 86400)
        throw new Error("seconds must be an integer from 1 to 86400");
      room.setTimer("close", payload.seconds * 1000);
      poll.closesAt = Date.now() + payload.seconds * 1000;
    }
  } else if (event === "vote") {
    if (!poll?.open) throw new Error("no open poll");
    if (!Number.isInteger(payload.option) || !poll.options[payload.option]) throw new Error("no such option");
    votes[conn.user] = payload.option;
  } else if (event === "close") {
    if (!poll?.open) throw new Error("no open poll");
    if (poll.by !== conn.user) throw new Error("only the poll's creator can close it");
    poll.open = false;
    room.clearTimer("close");
  } else {
    throw new Error(`unknown event "${event}"`);
  }
  room.broadcast("poll", view());
  return view();
}

// The poll's time is up: it closes as if its creator had closed it.
export function onTimer(name) {
  if (name !== "close" || !poll?.open) return;
  poll.open = false;
  room.broadcast("poll", view());
}

// The results over HTTP: any GET on the room's /http/ path.
export function onRequest(req) {
  if (req.method !== "GET") return { status: 405, headers: { allow: "GET" }, body: "GET only" };
  return view();
}

export function snapshot() {
  return { poll, votes };
}

export function restore(state) {
  ({ poll, votes } = state);
}
