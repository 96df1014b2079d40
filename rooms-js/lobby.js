// lobby: players wait in line for a match ("lobby:<name>"). It shows timers,
// kick and messages to other rooms: a tab idle for IDLE_MS is kicked, and
// every match is announced in the room "chat:<name>".
// Events: "queue" (get in line), "ping" (stay).
const IDLE_MS = 60_000;

let waiting = []; // users in line, first come first served

const stayAwake = (conn) => room.setTimer(`idle:${conn.id}`, IDLE_MS);

export function onJoin(conn) {
  stayAwake(conn);
  return { waiting };
}

export function onMessage(conn, event) {
  stayAwake(conn);
  if (event === "ping") return {};
  if (event !== "queue") throw new Error(`unknown event "${event}"`);
  if (waiting.includes(conn.user)) throw new Error("already in line");
  waiting.push(conn.user);
  if (waiting.length < 2) {
    room.broadcast("waiting", { waiting });
    return { waiting };
  }
  const players = waiting.splice(0, 2);
  room.broadcast("matched", { players });
  // Sent once this event is durable, delivered exactly once.
  room.send(`chat:${room.name}`, "new_msg", { text: `${players.join(" and ")} start a match` });
  return { waiting };
}

export function onLeave(conn) {
  room.clearTimer(`idle:${conn.id}`);
  if (!room.connections().some((c) => c.user === conn.user)) {
    waiting = waiting.filter((user) => user !== conn.user);
  }
}

export function onTimer(name) {
  if (name.startsWith("idle:")) room.kick(name.slice(5), `idle for ${IDLE_MS / 1000} s`);
}

export function snapshot() {
  return { waiting };
}

export function restore(state) {
  ({ waiting } = state);
}
