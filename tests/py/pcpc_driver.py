"""phoenix-channels-python-client 0.4.1 (asyncio) through the matrix script
(see matrix.py), in V1 mode, plus a third client in V2 mode that shows the
client's own V2 bug.

What its code does, checked here:
- it has no push API: PHXChannelsClient only subscribes. The driver sends
  with the client's own protocol handler (get_protocol_handler()
  .send_message on client.connection, both public), so the frames are the
  ones the client writes; replies reach the topic's message handler as
  phx_reply events;
- it keeps the join reply's response to itself (topic_runtime
  _handle_join_response_mode only reads its status), so the history a room
  returns on join never reaches the application. The driver taps the
  handler's parse_message to show the frame did arrive;
- it needs an api_key argument and sends it as a query parameter, which
  roomhost ignores; heartbeats go every 30 s (heartbeat_interval_s) and
  on_heartbeat_ack counts their replies;
- in V2 mode it drops every frame whose join_ref is not its channel's
  (protocol_handler.process_websocket_messages), so broadcasts, whose
  join_ref Phoenix writes as null, never reach the application. That is the
  client's bug: Phoenix and roomhost both send broadcasts with a null
  join_ref.
"""

import asyncio
import time

from phoenix_channels_python_client import PHXChannelsClient, PhoenixChannelsProtocolVersion
from phoenix_channels_python_client.utils import make_message

import matrix

args = matrix.parse_args("phoenix-channels-python-client")


class Peer:
    """One client joined to the room: what its handler got, and every frame
    its parser saw."""

    def __init__(self, user, version):
        self.user = user
        self.version = version
        self.handled = []  # messages the topic handler received
        self.wire = []  # every message the protocol handler parsed
        self.heartbeat_acks = 0
        self.presence = matrix.Presence()
        self.pushes = 0
        self.client = PHXChannelsClient(
            args.url + "?user=" + user,
            "not-used-by-roomhost",
            protocol_version=version,
            auto_reconnect=False,
            on_heartbeat_ack=self.on_heartbeat_ack,
        )

    def on_heartbeat_ack(self):
        self.heartbeat_acks += 1

    async def on_message(self, message):
        self.handled.append(message)
        self.presence.on(message.event, message.payload)

    async def join(self):
        await self.client.__aenter__()
        handler = self.client.get_protocol_handler()
        parse = handler.parse_message

        def tap(raw):
            message = parse(raw)
            self.wire.append(message)
            return message

        handler.parse_message = tap
        await self.client.subscribe_to_topic(args.topic, self.on_message)
        # The join reply: its ref is the subscription's join_ref.
        join_ref = self.client.get_current_subscriptions()[args.topic].join_ref
        replies = [m for m in self.wire if str(m.event) == "phx_reply" and m.ref == join_ref]
        matrix.check(len(replies) == 1, "one join reply on the wire")
        return join_ref, replies[0].payload["response"]

    async def push(self, text):
        self.pushes += 1
        ref = "push-%d" % self.pushes
        subscription = self.client.get_current_subscriptions()[args.topic]
        message = make_message(
            event="new_msg",
            topic=args.topic,
            ref=ref,
            payload={"text": text},
            join_ref=subscription.join_ref,
        )
        await self.client.get_protocol_handler().send_message(self.client.connection, message)
        await matrix.until_async(lambda: self.reply(ref) is not None, "the reply to " + ref)
        return self.reply(ref)

    def reply(self, ref):
        for m in self.handled:
            if str(m.event) == "phx_reply" and m.ref == ref:
                return m.payload
        return None

    def got_broadcast(self, messages, text):
        return any(m.event == "new_msg" and m.payload.get("text") == text for m in messages)


async def scenario():
    v1 = PhoenixChannelsProtocolVersion.V1
    a, b = Peer("pcpc-a", v1), Peer("pcpc-b", v1)
    join_ref, history = await a.join()
    matrix.check_history(args, history)
    matrix.check(
        not any(str(m.event) == "phx_reply" and m.ref == join_ref for m in a.handled),
        "the join reply withheld from the handler, as the client's code does",
    )
    matrix.step(args, "history", "A's join reply (on the wire, not given to the handler) holds the seeded message")
    await b.join()

    text = "hello from phoenix-channels-python-client"
    reply = await a.push(text)
    matrix.check_push_reply(args, reply)
    await matrix.until_async(lambda: b.got_broadcast(b.handled, text), "B to receive A's broadcast")
    matrix.step(args, "broadcast", "B received it")
    await matrix.until_async(lambda: a.presence.users() >= {a.user, b.user}, "A's presence to list both")
    matrix.step(args, "presence", "A's presence lists A and B")

    # V2 mode: the push's reply carries the join_ref and is handled; the
    # broadcast arrives on the wire with a null join_ref and is dropped.
    c = Peer("pcpc-v2", PhoenixChannelsProtocolVersion.V2)
    await c.join()
    v2_text = "hello from V2 mode"
    v2_reply = await c.push(v2_text)
    matrix.check(v2_reply["status"] == "ok", "V2: an ok reply: %r" % v2_reply)
    await matrix.until_async(lambda: b.got_broadcast(b.handled, v2_text), "B (V1) to receive the V2 client's broadcast")
    await matrix.until_async(lambda: c.got_broadcast(c.wire, v2_text), "V2: the broadcast on the wire")
    matrix.check(
        [m.join_ref for m in c.wire if m.event == "new_msg"] == [None],
        "V2: the broadcast's join_ref is null on the wire",
    )
    matrix.check(not c.got_broadcast(c.handled, v2_text), "V2: the client to drop the broadcast (its bug)")
    await c.client.unsubscribe_from_topic(args.topic)
    await c.client.shutdown("V2 check done")
    matrix.step(args, "v2", "V2 mode: reply handled, broadcast on the wire dropped by the client")

    # Nothing but the client's own heartbeats until past the timeout.
    await asyncio.sleep(max(0.0, args.hold_until - time.monotonic()))
    quiet = round(time.monotonic() - args.started, 1)
    matrix.check(a.client.is_topic_joined(args.topic) and b.client.is_topic_joined(args.topic), "both still joined after %ss" % quiet)
    after = await a.push("still here")
    matrix.check(after["status"] == "ok", "a reply after the quiet period: %r" % after)
    matrix.step(args, "quiet", "alive after %ss, %d heartbeat acks" % (quiet, a.heartbeat_acks))

    await a.client.unsubscribe_from_topic(args.topic)
    await matrix.until_async(lambda: a.user in b.presence.left, "B to see A leave")
    matrix.step(args, "leave", "unsubscribed, B saw A leave")
    await a.client.shutdown("done")
    await b.client.shutdown("done")

    matrix.report(args, quiet_seconds=quiet, heartbeat_replies=a.heartbeat_acks)


matrix.run(args, lambda: asyncio.run(scenario()))
