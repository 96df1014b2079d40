// ticker: a game-loop tick ("ticker:<name>"). "start" {ms} (10 to 1000) makes
// the room tick every ms milliseconds, re-arming its timer in onTimer, until
// "stop". Every tick is a journaled event and broadcasts `tick` {n, due}.
let every = 0; // ms between ticks; 0 when stopped
let n = 0;

function arm() {
  room.setTimer("tick", every, { due: Date.now() + every });
}

export function onJoin() {
  return { every, n };
}

export function onMessage(conn, event, payload) {
  if (event === "start") {
    const ms = payload.ms ?? 50;
    if (!Number.isInteger(ms) || ms < 10 || ms > 1000) throw new Error("ms must be an integer from 10 to 1000");
    every = ms;
    arm();
  } else if (event === "stop") {
    every = 0;
    room.clearTimer("tick");
  } else {
    throw new Error(`unknown event "${event}"`);
  }
  return { every, n };
}

export function onTimer(name, payload) {
  if (name !== "tick" || every === 0) return;
  n += 1;
  room.broadcast("tick", { n, due: payload.due });
  arm();
}

export function snapshot() {
  return { every, n };
}

export function restore(state) {
  ({ every, n } = state);
}
