// A room whose channels sit quiet hibernates (frees its JavaScript) and
// wakes for the next push: the official phoenix client, joined through it,
// sees nothing but the reply — no phx_error, no rejoin, no presence change.

import { test } from "node:test";
import assert from "node:assert/strict";
import { api } from "./support/roomhost.js";
import { join, replyOf, roomhostWithClients } from "./support/phoenix-client.js";
import { waitFor } from "./support/wait.js";

const { server, open } = roomhostWithClients({ args: ["--hibernate-after", "0.3"] });

test("a channel sits through a hibernation and a wake and sees only its reply", async () => {
  const socket = await open("hana");
  const { channel } = await join(socket, "chat:js-sleep");
  const first = await replyOf(channel.push("new_msg", { text: "before the nap" }));
  assert.equal(first.status, "ok");

  const seen = [];
  channel.onMessage = (event, payload, ref) => {
    seen.push(event);
    return payload;
  };
  let errors = 0;
  channel.onError(() => { errors += 1; });

  const room = await waitFor(async () => {
    const { body } = await api(server, "GET", "/api/rooms/chat:js-sleep");
    return body.state === "hibernated" ? body : null;
  }, { what: "the room to hibernate", timeoutMs: 10000 });
  assert.equal(room.js_memory, 0, "its JavaScript is freed");
  assert.equal(room.channels, 1, "its channel stays joined");

  const second = await replyOf(channel.push("new_msg", { text: "after the nap" }));
  assert.equal(second.status, "ok");
  assert.equal(second.response.id, first.response.id + 1, "the state carried over");
  const { body: awake } = await api(server, "GET", "/api/rooms/chat:js-sleep");
  assert.notEqual(awake.state, "hibernated");
  assert.equal(errors, 0, "no phx_error");
  // phoenix.js routes replies through chan_reply_<ref> events of its own.
  const other = seen.filter((e) => e !== "phx_reply" && e !== "new_msg" && !e.startsWith("chan_reply_"));
  assert.deepEqual(other, [], `only replies and its own broadcast: ${seen}`);
});
