// chat: one instance per topic "chat:<name>". The room's state lives in JS;
// roomhost journals every event, so it survives crashes and restarts.
const MAX_TEXT = 2000;  // characters per message
const KEEP = 500;       // messages kept in the room
const HISTORY = 50;     // messages sent to a joining tab

let messages = [];
let nextId = 1;         // ids stay unique and increasing after old messages drop

// onJoin only reads: while the disk refuses writes, tabs still join and see
// the history (their joins are journaled once it takes writes again).
export const readOnlyJoins = true;

export function onJoin(conn, params) {
  return { messages: messages.slice(-HISTORY) };
}

export function onMessage(conn, event, payload) {
  if (event !== "new_msg") throw new Error(`unknown event "${event}"`);
  // Only a string is a message: String({}) would store "[object Object]".
  if (typeof payload?.text !== "string") throw new Error("text must be a string");
  const text = payload.text.trim();
  if (text === "") throw new Error("message is blank");
  // Counting code points copies the string: only needed when its UTF-16
  // length (never below the code point count) is over the limit.
  if (text.length > MAX_TEXT && [...text].length > MAX_TEXT)
    throw new Error(`message is longer than ${MAX_TEXT} characters`);
  const msg = { id: nextId++, user: conn.user, text, at: Date.now() };
  messages.push(msg);
  while (messages.length > KEEP) messages.shift(); // not slice: no copy of the array
  room.broadcast("new_msg", msg);
  return { id: msg.id };
}

export function snapshot() {
  return { messages, nextId };
}

export function restore(state) {
  ({ messages, nextId } = state);
}
