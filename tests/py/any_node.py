"""python-socketio clients through a proxy with no affinity (tests/any_node.rs).

--url: the proxy; --transport=polling (polling only) or upgrade (polling,
then WebSocket); --clients, --messages.

Each client connects, joins room "any", calls `ack` --messages times in
sequence (each acknowledged with its own arguments), then emits a burst of
`ack` events with callbacks without waiting; the first client sends `news`
to the room and a `broadcast` (everyone but the sender); then every client
disconnects. Prints one JSON line: what each client got. Only timeouts are
judged here; the Rust test checks the rest.
"""

import argparse
import importlib.metadata
import json
import logging
import sys
import threading

import socketio

WAIT = 15

# The clients' warnings (such as a status the server answered) go to the
# standard error, which the test shows when this fails.
logging.basicConfig(stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
LOG = logging.getLogger("any_node")
LOG.setLevel(logging.WARNING)


class Recorder:
    """Values of one event, with a wait for the n-th."""

    def __init__(self):
        self.values = []
        self.changed = threading.Condition()

    def add(self, value):
        with self.changed:
            self.values.append(value)
            self.changed.notify_all()

    def until(self, n, what):
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.values) >= n, WAIT):
                raise TimeoutError(f"{len(self.values)} of {n} {what} within {WAIT} s")
            return list(self.values)


class Client:
    def __init__(self, index, url, transports):
        self.index = index
        self.sio = socketio.Client(reconnection=False, logger=LOG, engineio_logger=LOG)
        self.news = Recorder()
        self.broadcasts = Recorder()
        self.burst = Recorder()
        self.disconnects = Recorder()
        self.sio.on("news", self.news.add)
        self.sio.on("bcast", self.broadcasts.add)
        self.sio.on("disconnect", self.disconnects.add)
        try:
            self.sio.connect(url, transports=transports, wait_timeout=WAIT)
        except socketio.exceptions.ConnectionError as error:
            raise RuntimeError(f"client {index} could not connect through {url}: {error}") from error
        self.id = self.sio.get_sid()
        self.engine = self.sio.eio.sid
        self.transport = self.sio.transport()

    def call(self, event, data):
        return self.sio.call(event, data, timeout=WAIT)

    def run(self, messages, burst):
        self.sequence = []
        for k in range(messages):
            back = self.call("ack", {"c": self.index, "k": k})
            self.sequence.append(back["k"] if back["c"] == self.index else f"client {back['c']}")
        for k in range(messages, messages + burst):
            self.sio.emit(
                "ack",
                {"c": self.index, "k": k},
                callback=lambda back: self.burst.add(
                    back["k"] if back["c"] == self.index else f"client {back['c']}"
                ),
            )
        self.burst.until(burst, "burst acks")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--urls", default="")
    parser.add_argument("--transport", default="polling")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--burst", type=int, default=3)
    args = parser.parse_args()
    transports = ["polling"] if args.transport == "polling" else ["polling", "websocket"]

    clients = [Client(i, args.url, transports) for i in range(args.clients)]
    joined = [c.call("join", "any") for c in clients]
    failures = []

    def guarded(client):
        try:
            client.run(args.messages, args.burst)
        except Exception as error:  # reported below, with the client
            failures.append(f"client {client.index}: {error!r}")

    threads = [threading.Thread(target=guarded, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError("; ".join(failures))

    first = clients[0]
    news_ack = first.call("toRoom", {"rooms": ["any"], "event": "news", "data": "from python"})
    broadcast_ack = first.call("broadcast", {"event": "bcast", "data": "to the others"})
    for c in clients:
        c.news.until(1, "news")
    for c in clients[1:]:
        c.broadcasts.until(1, "broadcasts")
    # Where each session lives, as the cluster's presence sees it.
    fetched = first.call("fetch", {"room": "any"})
    node_of = {s["id"]: s["node"] for s in fetched.get("sockets", [])}
    # One more round trip each: anything late (a duplicate) would be in by now.
    last = [c.call("ack", {"c": c.index, "k": "last"})["k"] for c in clients]

    results = []
    for c in clients:
        transport_at_end = c.sio.transport()
        before = list(c.disconnects.values)
        c.sio.disconnect()
        reasons = c.disconnects.until(len(before) + 1, "disconnect events")
        results.append(
            {
                "id": c.id,
                "engine": c.engine,
                "node": node_of.get(c.id),
                "transport": c.transport,
                "transportAtEnd": transport_at_end,
                "joined": joined[c.index],
                "sequence": c.sequence,
                "burst": c.burst.values,
                "news": c.news.values,
                "broadcasts": c.broadcasts.values,
                "last": last[c.index],
                "disconnectsBefore": before,
                "disconnectReason": reasons[len(before)],
                "connectedAfter": c.sio.connected,
            }
        )
    print(
        json.dumps(
            {
                "clients": results,
                "newsAck": news_ack,
                "broadcastAck": broadcast_ack,
                "version": importlib.metadata.version("python-socketio"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
