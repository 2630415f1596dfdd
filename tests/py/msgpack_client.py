"""python-socketio with its msgpack serializer against io-nodes with
`--parser msgpack` (tests/msgpack.rs).

--url: an io-node; --transport=polling (polling only) or upgrade (polling,
then WebSocket). Connects, gets `welcome`, calls `ack` with text, numbers,
nested values and bytes (acknowledged with the same arguments), has `echo`
emitted back, joins a room and gets a room emit, answers a server emit that
asks for an ack, then disconnects. Prints one JSON line.
"""

import argparse
import json
import sys
import threading

import socketio

WAIT = 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", default="upgrade")
    options, _ = parser.parse_known_args()
    transports = ["polling"] if options.transport == "polling" else ["polling", "websocket"]

    sio = socketio.Client(reconnection=False, serializer="msgpack")
    got = {}
    arrived = threading.Event()
    welcome = threading.Event()
    disconnects = []

    @sio.on("welcome")
    def on_welcome(data):
        got["welcome"] = isinstance(data, dict) and isinstance(data.get("sid"), str)
        welcome.set()

    @sio.on("echo")
    def on_echo(*args):
        got["echo"] = [list(a) if isinstance(a, bytes) else a for a in args]
        arrived.set()

    @sio.on("news")
    def on_news(data):
        got["news"] = data
        arrived.set()

    @sio.on("question")
    def on_question(value):
        return f"answer to {value}"

    @sio.on("disconnect")
    def on_disconnect(reason=None):
        disconnects.append(str(reason))

    sio.connect(options.url, transports=transports, wait_timeout=WAIT)
    if not welcome.wait(WAIT):
        raise TimeoutError("no welcome")
    answer = sio.call("ack", ("text", 1.5, {"nested": [1, None, True]}, b"\x01\x02\x03"), timeout=WAIT)
    got["ack"] = [list(a) if isinstance(a, bytes) else a for a in answer]
    arrived.clear()
    sio.emit("echo", (b"\x09\x08", "after"))
    if not arrived.wait(WAIT):
        raise TimeoutError("no echo")
    got["joined"] = sio.call("join", "py-room", timeout=WAIT)
    arrived.clear()
    sio.call("toRoom", {"rooms": ["py-room"], "event": "news", "data": "to the room"}, timeout=WAIT)
    if not arrived.wait(WAIT):
        raise TimeoutError("no news")
    got["asked"] = sio.call("ask", {"event": "question", "data": 42}, timeout=WAIT)
    got["transport"] = sio.transport()
    got["disconnects"] = list(disconnects)
    sio.disconnect()
    print(json.dumps(got))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the test shows this
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
