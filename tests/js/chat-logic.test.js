// Unit tests of the chat page's pure logic (no browser, no server): message
// dedup and order, topic parsing, handles, URLs, links in messages, name
// colours and the time format the chat and the dashboard share.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MessageLog } from "../../static/message-log.js";
import { parseTopic, cleanHandle, randomHandle, urlForTopic, topicFromLocation } from "../../static/chat-prefs.js";
import { splitLinks, colourFor, USER_COLOURS } from "../../static/chat-view.js";
import { formatTime } from "../../static/time-format.js";

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

test("links: http(s) addresses become links, trailing punctuation stays text, nothing else is linked", () => {
  assert.deepEqual(splitLinks("see https://example.com/a_(b)?q=1. now"), [
    { text: "see " }, { text: "https://example.com/a_(b)?q=1", href: "https://example.com/a_(b)?q=1" }, { text: ". now" },
  ]);
  assert.deepEqual(splitLinks("(at http://x.test/path)"), [
    { text: "(at " }, { text: "http://x.test/path", href: "http://x.test/path" }, { text: ")" },
  ]);
  for (const text of ["javascript:alert(1)", "data:text/html,<b>x</b>", "https://", "ftp://x.test/", "a\u2028b"]) {
    assert.deepEqual(splitLinks(text), [{ text }], text);
  }
  // A link hidden in another scheme's text is still only the http(s) part.
  const tricky = splitLinks("javascript:https://evil.test/\"onmouseover=alert(1)");
  assert.deepEqual(tricky.filter((p) => p.href).map((p) => p.href), ["https://evil.test/"]);
  assert.equal(tricky.map((p) => p.text).join(""), "javascript:https://evil.test/\"onmouseover=alert(1)", "no text is lost");
});

test("name colours: a stable palette index, spread over the palette", () => {
  assert.equal(colourFor("alice"), colourFor("alice"));
  const names = Array.from({ length: 200 }, (_, i) => `user-${i}`);
  const counts = new Array(USER_COLOURS).fill(0);
  for (const name of names) {
    const index = colourFor(name);
    assert.ok(Number.isInteger(index) && index >= 0 && index < USER_COLOURS, `${name}: ${index}`);
    counts[index] += 1;
  }
  assert.ok(Math.min(...counts) >= 8, `every colour is used: ${counts}`);
});

test("times: one format for the chat and the dashboard", () => {
  const now = new Date(2026, 11, 2, 18, 30, 0);
  assert.equal(formatTime(new Date(2026, 11, 2, 9, 5, 7), { now }), "09:05");
  assert.equal(formatTime(new Date(2026, 11, 2, 9, 5, 7), { now, seconds: true }), "09:05:07");
  assert.equal(formatTime(new Date(2026, 11, 1, 23, 59, 0), { now }), "Dec 1 23:59");
  assert.equal(formatTime(new Date(2025, 0, 9, 7, 0, 0), { now }), "Jan 9 2025 07:00");
  assert.equal(formatTime(new Date(2026, 11, 2, 9, 5, 7).getTime() / 1000, { now }), "09:05", "seconds since the epoch");
  assert.equal(formatTime(null), "");
  assert.equal(formatTime("not a date"), "");
});
