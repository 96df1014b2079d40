"""phx-events 0.4.1 (V1, asyncio; Python 3.9, see below) through the matrix
script (see matrix.py).

What its code does, checked here:
- it needs Python 3.9: it pins websockets ~= 9.1, whose client passes loop= to
  asyncio.Lock, which 3.10 removed (TypeError on 3.11);
- it joins with a null ref and sends every frame as orjson bytes, i.e. as
  binary WebSocket frames (Phoenix's V1 decoder ignores the opcode, and so
  does roomhost);
- it has no push API and no heartbeat: the driver sends pushes with the
  client's own serializer (_send_message) on the socket it hands to
  process_websocket_messages, which a subclass sees. Its connection stays up
  past the heartbeat timeout all the same, because websockets 9.1 sends a
  WebSocket Ping every 20 s (ping_interval) and roomhost, like Cowboy under
  Phoenix (its idle timer restarts on any data), counts any frame as a sign
  of life;
- it has no leave either, and leaving its `async with` does not close the
  socket (__aexit__ calls shutdown() without it); shutdown(reason,
  websocket=ws), what its SIGTERM handler calls, does.
"""

import asyncio
import time

from phx_events.client import PHXChannelsClient
from phx_events.phx_messages import PHXEvent
from phx_events.utils import make_message

import matrix

args = matrix.parse_args("phx-events")

EVENTS = ["new_msg", "presence_state", "presence_diff", "room_info", PHXEvent.reply]


class Observed(PHXChannelsClient):
    """The client, keeping hold of the socket its message loop reads."""

    websocket = None

    async def process_websocket_messages(self, websocket):
        self.websocket = websocket
        await super().process_websocket_messages(websocket)


class Peer:
    def __init__(self, user):
        self.user = user
        self.messages = []
        self.presence = matrix.Presence()
        self.pushes = 0
        self.heartbeat_replies = 0  # frames on topic "phoenix"; it sends no heartbeat
        self.client = Observed(args.url + "?user=" + user)
        self.joined = self.client.register_topic_subscription(args.topic)
        for event in EVENTS:
            self.client.register_event_handler(event, [self.on_message], topic=args.topic)
        self.client.register_event_handler(PHXEvent.reply, [self.on_any_reply])

    async def on_any_reply(self, message, _client):
        if message.topic == "phoenix":
            self.heartbeat_replies += 1

    async def on_message(self, message, _client):
        self.messages.append(message)
        self.presence.on(str(message.event), message.payload)

    async def join(self):
        self.task = asyncio.ensure_future(self.client.start_processing())
        await asyncio.wait_for(self.joined.wait(), matrix.WAIT)
        # Its join carries a null ref, so the join reply's ref is null too.
        await matrix.until_async(lambda: self.reply(None) is not None, "the join reply")
        reply = self.reply(None)
        matrix.check(reply["status"] == "ok", "an ok join: %r" % reply)
        return reply["response"]

    async def push(self, text):
        self.pushes += 1
        ref = "push-%d" % self.pushes
        message = make_message(event="new_msg", topic=args.topic, ref=ref, payload={"text": text})
        await self.client._send_message(self.client.websocket, message)
        await matrix.until_async(lambda: self.reply(ref) is not None, "the reply to " + ref)
        return self.reply(ref)

    def reply(self, ref):
        for m in self.messages:
            if m.event == PHXEvent.reply and m.ref == ref:
                return m.payload
        return None

    def got_broadcast(self, text):
        return any(m.event == "new_msg" and m.payload.get("text") == text for m in self.messages)


async def scenario():
    a, b = Peer("phx-events-a"), Peer("phx-events-b")
    history = await a.join()
    matrix.check_history(args, history)
    matrix.step(args, "history", "A's join reply holds the seeded message")
    await b.join()

    text = "hello from phx-events"
    reply = await a.push(text)
    matrix.check_push_reply(args, reply)
    await matrix.until_async(lambda: b.got_broadcast(text), "B to receive A's broadcast")
    matrix.step(args, "broadcast", "B received it")
    await matrix.until_async(lambda: a.presence.users() >= {a.user, b.user}, "A's presence to list both")
    matrix.step(args, "presence", "A's presence lists A and B")

    ping_interval = a.client.websocket.ping_interval
    matrix.check(ping_interval is not None and ping_interval < args.heartbeat_timeout, "websockets pings within the timeout: %r" % ping_interval)
    # No heartbeat code at all: only websockets' pings cross the wire.
    await asyncio.sleep(max(0.0, args.hold_until - time.monotonic()))
    quiet = round(time.monotonic() - args.started, 1)
    matrix.check(not a.task.done() and not b.task.done(), "both connections open after %ss" % quiet)
    after = await a.push("still here")
    matrix.check(after["status"] == "ok", "a reply after the quiet period: %r" % after)
    matrix.step(args, "quiet", "alive after %ss without a heartbeat (pings every %ss)" % (quiet, ping_interval))

    a.client.shutdown("leaving", websocket=a.client.websocket)
    await asyncio.wait_for(a.task, matrix.WAIT)
    close_code = a.client.websocket.close_code
    matrix.check(close_code == 1000, "the server to answer A's close with 1000, got %r" % close_code)
    await matrix.until_async(lambda: a.user in b.presence.left, "B to see A leave")
    matrix.step(args, "leave", "A closed its socket (1000 echoed), B saw A leave")
    b.client.shutdown("done", websocket=b.client.websocket)
    await asyncio.wait_for(b.task, matrix.WAIT)

    matrix.report(
        args,
        quiet_seconds=quiet,
        heartbeat_replies=a.heartbeat_replies + b.heartbeat_replies,
        ping_interval=ping_interval,
        close_code=close_code,
    )


matrix.run(args, lambda: asyncio.run(scenario()))
