// counter: one shared number per room ("counter:<name>").
// Push "inc" or "dec" with an optional {by}; everyone sees the new value.
const LIMIT = 1000; // largest step

let value = 0;

export function onJoin(conn, params) {
  return { value };
}

export function onMessage(conn, event, payload) {
  const by = payload.by ?? 1;
  if (!Number.isInteger(by) || Math.abs(by) > LIMIT) {
    throw new Error(`by must be an integer between -${LIMIT} and ${LIMIT}`);
  }
  if (event === "inc") value += by;
  else if (event === "dec") value -= by;
  else throw new Error(`unknown event "${event}"`);
  room.broadcast("value", { value, by: conn.user });
  return { value };
}

export function snapshot() {
  return { value };
}

export function restore(state) {
  value = state.value;
}
