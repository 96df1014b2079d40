// hop (benchmarks only): forwards each "hop" push {to, text} to room `to` as
// a `new_msg` {text}, so `roomhost bench hop` times one room-to-room message
// from the push to the target room's broadcast.
export function onMessage(conn, event, payload) {
  if (event !== "hop") throw new Error(`unknown event "${event}"`);
  room.send(payload.to, "new_msg", { text: payload.text });
  return {};
}
