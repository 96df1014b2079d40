"""What every client driver in tests/py shares: its arguments, its checks,
the presence bookkeeping and the report that tests/py_clients.rs reads.

Standard library only, and Python 3.9 syntax: phx-events runs on 3.9.

Each driver runs two instances of its client, A and B, in one room and
walks the same script: join (A's join reply carries the history the test
seeded), A pushes and gets its reply, B receives the broadcast, A's presence
lists both, both stay connected past the server's heartbeat timeout sending
nothing of their own, A pushes again, A leaves and B sees it go: the steps
history, push, broadcast, presence, quiet, leave, which tests/py_clients.rs
expects in that order. A check that fails raises Failure; the driver exits
non-zero saying which.
"""

import argparse
import asyncio
import json
import sys
import time

# How long any one expected frame may take.
WAIT = 10.0


class Failure(Exception):
    pass


def parse_args(client):
    parser = argparse.ArgumentParser(description="drive " + client + " against roomhost")
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/socket/websocket")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--history", required=True, help="text of a message already in the room")
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        required=True,
        help="the server's --heartbeat-timeout; the clients stay quiet past it",
    )
    args = parser.parse_args()
    args.client = client
    args.steps = []
    args.started = time.monotonic()
    # Quiet until 5 s past the timeout: a connection the server counted as
    # idle would be closed by then.
    args.hold_until = args.started + args.heartbeat_timeout + 5.0
    return args


def check(condition, what):
    if not condition:
        raise Failure(what)


def step(args, key, detail):
    """Records that step `key` passed, and logs how."""
    args.steps.append(key)
    print("[%s %5.1fs] %s: %s" % (args.client, time.monotonic() - args.started, key, detail), file=sys.stderr, flush=True)


def until(predicate, what, timeout=WAIT):
    """Waits (threads) until predicate() is true; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for " + what)
        time.sleep(0.02)


async def until_async(predicate, what, timeout=WAIT):
    """Waits (asyncio) until predicate() is true; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for " + what)
        await asyncio.sleep(0.02)


def check_history(args, join_response):
    """The history step: the join reply's messages hold the seeded one."""
    texts = [m.get("text") for m in join_response.get("messages", [])]
    check(args.history in texts, "the seeded message in A's join reply: %r" % join_response)


def check_push_reply(args, reply):
    """The push step: chat.js answers new_msg with {id}."""
    check(
        reply.get("status") == "ok" and isinstance(reply.get("response", {}).get("id"), int),
        "an ok reply with an id: %r" % reply,
    )
    step(args, "push", "ok, id %s" % reply["response"]["id"])


class Presence:
    """Who is present, from presence_state and presence_diff as they arrive
    (Phoenix.Presence's syncState/syncDiff, keyed by user and phx_ref)."""

    def __init__(self):
        self.metas = {}
        self.left = []

    def on(self, event, payload):
        if event == "presence_state":
            self.metas = {user: {m["phx_ref"] for m in v["metas"]} for user, v in payload.items()}
        elif event == "presence_diff":
            for user, v in payload.get("joins", {}).items():
                self.metas.setdefault(user, set()).update(m["phx_ref"] for m in v["metas"])
            for user, v in payload.get("leaves", {}).items():
                refs = self.metas.get(user, set())
                refs.difference_update(m["phx_ref"] for m in v["metas"])
                if not refs:
                    self.metas.pop(user, None)
                    self.left.append(user)

    def users(self):
        return set(self.metas)


def report(args, **facts):
    """The driver's last stdout line: the steps passed and what it observed,
    for the Rust side."""
    facts["client"] = args.client
    facts["steps"] = args.steps
    facts["seconds"] = round(time.monotonic() - args.started, 1)
    print("MATRIX " + json.dumps(facts, sort_keys=True), flush=True)


def run(args, body):
    """Runs body(), reports a failed step on stderr and exits 1."""
    try:
        body()
    except Failure as failure:
        print("[%s] FAILED: %s" % (args.client, failure), file=sys.stderr, flush=True)
        sys.exit(1)
