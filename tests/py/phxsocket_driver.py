"""phxsocket 0.1.5 (V1, threads) through the matrix script (see matrix.py).

What its code does, checked here:
- it connects with vsn=1.0.0 and numbers its refs with integers from 0;
- a thread sends a heartbeat every 5 s (Client.heartbeat_interval);
- Channel.leave() sends phx_leave, then calls leave.response(), which
  SentMessage does not have: it always returns (False, <AttributeError
  traceback>) at once, without waiting for the reply. The leave itself
  happens: phx_close arrives and the other client sees the leave.
"""

import time

import phxsocket

import matrix

args = matrix.parse_args("phxsocket")


class Peer:
    """One phxsocket client joined to the room, and what it received."""

    def __init__(self, user):
        self.user = user
        self.events = []  # (event, payload) pushed to the channel
        self.heartbeat_replies = 0
        self.closed = False
        self.presence = matrix.Presence()
        self.client = phxsocket.Client(args.url, {"user": user})
        self.client.on_message = self.on_socket_message

    def on_socket_message(self, message):
        if message.topic == "phoenix" and message.event == "phx_reply":
            self.heartbeat_replies += 1

    def on_channel_message(self, _socket, event, payload):
        self.events.append((event, payload))
        self.presence.on(event, payload)

    def on_close(self):
        self.closed = True

    def join(self):
        self.client.connect()
        self.channel = self.client.channel(args.topic, {})
        self.channel.on_message = self.on_channel_message
        self.channel.on_close = self.on_close
        return self.channel.join()

    def push(self, text):
        sent = self.channel.push("new_msg", {"text": text}, reply=True)
        matrix.check(sent.event.wait(matrix.WAIT), "a reply to new_msg")
        return sent.message

    def got_broadcast(self, text):
        return any(e == "new_msg" and p.get("text") == text for e, p in self.events)


def body():
    a, b = Peer("phxsocket-a"), Peer("phxsocket-b")
    history = a.join()
    matrix.check_history(args, history)
    matrix.step(args, "history", "A's join reply holds the seeded message")
    b.join()

    text = "hello from phxsocket"
    reply = a.push(text)
    matrix.check_push_reply(args, reply)
    matrix.until(lambda: b.got_broadcast(text), "B to receive A's broadcast")
    matrix.step(args, "broadcast", "B received it")

    matrix.until(lambda: a.presence.users() >= {a.user, b.user}, "A's presence to list both")
    matrix.step(args, "presence", "A's presence lists A and B")

    # Nothing but phxsocket's own heartbeats until past the timeout.
    time.sleep(max(0.0, args.hold_until - time.monotonic()))
    quiet = round(time.monotonic() - args.started, 1)
    matrix.check(not a.closed and not b.closed, "both channels still open after %ss" % quiet)
    after = a.push("still here")
    matrix.check(after["status"] == "ok", "a reply after the quiet period: %r" % after)
    matrix.step(args, "quiet", "alive after %ss, %d heartbeat replies" % (quiet, a.heartbeat_replies))

    left, detail = a.channel.leave()
    matrix.check(not left and "AttributeError" in detail, "leave() to fail as its code does: %r" % detail)
    matrix.until(lambda: a.closed, "phx_close for A's channel")
    matrix.until(lambda: a.user in b.presence.left, "B to see A leave")
    matrix.step(args, "leave", "phx_close came (leave() returned False), B saw A leave")
    a.client.close()
    b.client.close()

    matrix.report(args, quiet_seconds=quiet, heartbeat_replies=a.heartbeat_replies, leave_returned=left)


matrix.run(args, body)
