"""python-socketio clients through a proxy with no affinity while an io-node
is killed (tests/any_node.rs).

--url: the proxy; --clients. Each client connects (polling, then WebSocket;
socket.io reconnection on, fast), joins room "kill" and is acknowledged
once. Prints {"ready": [...]} with each client's socket id and Engine.IO
sid, then waits for one line on standard input (the test kills an io-node
meanwhile). Then every client must be connected again (python-socketio has
no connection state recovery: one whose connection went with the node gets
a new session) and be acknowledged; the first sends `news` to the room,
which everyone must get. Prints one JSON line: per client its disconnects,
connects, the ack after the kill and the news.
"""

import argparse
import json
import sys
import threading
import time

import socketio

WAIT = 20


class Client:
    def __init__(self, index, url):
        self.index = index
        self.sio = socketio.Client(
            reconnection=True,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
            randomization_factor=0,
        )
        self.lock = threading.Condition()
        self.connects = 0
        self.disconnects = []
        self.news = []
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("news", self.on_news)
        self.sio.connect(url, transports=["polling", "websocket"], wait_timeout=WAIT)
        self.wait_for(lambda: self.connects >= 1, "connect")
        self.id = self.sio.get_sid()
        self.engine = self.sio.eio.sid

    def on_connect(self):
        with self.lock:
            self.connects += 1
            self.lock.notify_all()
        # A new session after a lost connection: back in the room.
        if self.connects > 1:
            threading.Thread(target=lambda: self.sio.call("join", "kill", timeout=WAIT)).start()

    def on_disconnect(self, reason=None):
        with self.lock:
            self.disconnects.append(str(reason))
            self.lock.notify_all()

    def on_news(self, data):
        with self.lock:
            self.news.append(data)
            self.lock.notify_all()

    def wait_for(self, check, what):
        with self.lock:
            if not self.lock.wait_for(check, WAIT):
                raise TimeoutError(f"client {self.index}: no {what} within {WAIT} s")

    def call(self, event, data, timeout=WAIT):
        return self.sio.call(event, data, timeout=timeout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=6)
    options, _ = parser.parse_known_args()
    clients = []
    for i in range(options.clients):
        clients.append(Client(i, options.url))
        # One after the other: the proxy's turns spread the sessions and
        # the upgrades over the io-nodes.
        time.sleep(0.1)
    for c in clients:
        c.call("join", "kill")
        c.call("ack", {"before": c.index})
    print(json.dumps({"ready": [{"id": c.id, "engine": c.engine} for c in clients]}), flush=True)
    sys.stdin.readline()

    results = []
    for c in clients:
        # Connected again (or still), and answered. An emit sent on a
        # session that went with the node is never answered (no connection
        # state recovery in python-socketio): it times out and is sent again.
        deadline = time.monotonic() + WAIT
        answer = None
        while time.monotonic() < deadline:
            if c.sio.connected and c.connects > len(c.disconnects):
                try:
                    answer = c.call("ack", {"after": c.index}, timeout=2)
                    break
                except Exception as error:  # the connection went meanwhile: retry
                    print(f"client {c.index}: ack failed: {error!r}", file=sys.stderr)
            time.sleep(0.1)
        results.append({"answer": answer})
    # Rejoined clients are in the room again before the news goes out.
    time.sleep(0.5)
    clients[0].call("toRoom", {"rooms": ["kill"], "event": "news", "data": "after the kill"})
    for c in clients:
        c.wait_for(lambda c=c: len(c.news) >= 1, "news")
    out = []
    for c, result in zip(clients, results):
        out.append(
            {
                "id": c.id,
                "engine": c.engine,
                "disconnects": list(c.disconnects),
                "connects": c.connects,
                "answer": result["answer"],
                "news": list(c.news),
            }
        )
    for c in clients:
        c.sio.disconnect()
    print(json.dumps({"clients": out}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
