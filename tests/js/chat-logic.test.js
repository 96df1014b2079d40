// Unit tests of the chat page's pure logic (no browser, no server): message
// dedup and order, topic parsing, handles, URLs.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MessageLog } from "../../static/message-log.js";
import { parseTopic, cleanHandle, randomHandle, urlForTopic, topicFromLocation } from "../../static/chat-prefs.js";

const msg = (id, text = `m${id}`) => ({ id, user: "u", text, at: 1700000000000 + id });

test("MessageLog deduplicates by id and keeps id order", () => {
  const log = new MessageLog();
  assert.equal(log.add(msg(2)), "append");
  assert.equal(log.add(msg(2)), null);
  assert.equal(log.add(msg(1)), "insert");
  assert.equal(log.add(msg(3)), "append");
  assert.deepEqual(log.sorted.map((m) => m.id), [1, 2, 3]);
});

test("MessageLog merges rejoin history that overlaps what is shown", () => {
  const log = new MessageLog();
  for (const id of [1, 2, 3, 4]) log.add(msg(id));
  log.add(msg(6)); // live message that raced the join reply
  log.merge([msg(3), msg(4), msg(5, "new while away"), msg(6)]);
  assert.deepEqual(log.sorted.map((m) => m.id), [1, 2, 3, 4, 5, 6]);
  assert.equal(log.sorted[4].text, "new while away");
  assert.equal(log.add(msg(5)), null);
});

test("MessageLog ignores malformed entries and keeps at most 500", () => {
  const log = new MessageLog();
  log.merge([null, { text: "no id" }, msg(1)]);
  assert.equal(log.size, 1);
  for (let id = 2; id <= 600; id += 1) log.add(msg(id));
  assert.equal(log.size, 500);
  assert.equal(log.sorted[0].id, 101);
  assert.equal(log.has(1), false);
});

test("parseTopic: bare names go to chat:, bad topics get a sentence", () => {
  assert.deepEqual(parseTopic("general"), { topic: "chat:general" });
  assert.deepEqual(parseTopic(" chat:lobby "), { topic: "chat:lobby" });
  assert.deepEqual(parseTopic("game_2:room.A~b-c"), { topic: "game_2:room.A~b-c" });
  for (const bad of ["", "Chat:x", "chat:", "chat:has space", "chat:a/b", `chat:${"x".repeat(65)}`, "1chat:x"]) {
    assert.ok(parseTopic(bad).error, `${JSON.stringify(bad)} is refused`);
  }
});

test("handles: random ones look like swift-otter-42; typed ones are tidied", () => {
  assert.match(randomHandle(), /^[a-z]+-[a-z]+-\d{2}$/);
  assert.equal(cleanHandle("  ada  lovelace "), "ada-lovelace");
  assert.equal(cleanHandle("   "), null);
  assert.equal(cleanHandle("x".repeat(40)).length, 32);
});

test("the URL names the room and keeps other parameters", () => {
  const loc = { pathname: "/", search: "?transport=longpoll&room=chat:old", hash: "" };
  assert.equal(urlForTopic("chat:new", loc), "/?room=chat:new&transport=longpoll");
  assert.equal(topicFromLocation({ search: "?room=chat:a", hash: "" }), "chat:a");
  assert.equal(topicFromLocation({ search: "", hash: "#room=chat:b" }), "chat:b");
  assert.equal(topicFromLocation({ search: "", hash: "" }), null);
});
