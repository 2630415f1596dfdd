#!/usr/bin/env python3
"""Redis's own CPU per event for the forms the event path's commands can take.

Starts nothing: give it the port of a redis-server of its own (it deletes the
keys `rf:events` and `rf:inflight` and subscribes to `rf:node`). Each form
runs ROUNDS blocks of BATCH events, pipelined, and is measured by Redis's
`used_cpu_user + used_cpu_sys` (INFO cpu) before and after, divided by the
events: what Redis spends, not the client. Forms alternate and repeat.

  take-script   LPUSH the batch, then the take script (scripts::FETCH)
  take-lmove    LPUSH the batch, then one LMOVE per event
  flush-script  LPUSH into the in-flight list, then the flush script
                (scripts::FLUSH) with one ack command and one done per event
  flush-multi   the same work in MULTI: one LREM per event, one PUBLISH (not
                conditional, so not a replacement as it is: a lower bound)
  push          LPUSH the batch, then DEL the list: what the forms above
                share, so that take-lmove + flush-multi - push is the least
                Redis can spend on an event that is queued, moved to an
                in-flight list, removed from it and answered by a publish

Every form includes the LPUSH that fills its list (and the take forms a DEL
of the in-flight list), so compare forms of one kind with each other.

usage: scripts/redis-forms.py PORT [--size BYTES] [--batch N] [--rounds R] [--repeat K]
"""

import argparse
import hashlib
import os
import pathlib
import re
import socket

ROOT = pathlib.Path(__file__).resolve().parent.parent


def script(name):
    text = (ROOT / "crates/protocol/src/scripts.rs").read_text()
    return re.search(r'pub const ' + name + r': &str = r"(.*?)";', text, re.S).group(1)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            arg = str(arg)
        if isinstance(arg, str):
            arg = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.sock.recv(1 << 16)

    def cpu(self):
        info = self.call("INFO", "cpu").decode()
        fields = dict(line.split(":", 1) for line in info.split("\r\n") if ":" in line)
        return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])

    def drain(self):
        """Reads replies until none come for 5 ms."""
        self.sock.settimeout(0.5)
        try:
            while self.sock.recv(1 << 20):
                self.sock.settimeout(0.005)
        except socket.timeout:
            pass
        self.sock.settimeout(None)


def blocks(form, size, batch, rounds, fetch, flush):
    events = [b"\x93\x01\xa5event" + os.urandom(size) + b"%04d" % i for i in range(batch)]
    ack = b"\x93\x01\xa3ack" + os.urandom(70)
    done = b"\x93\x01\xa4done" + os.urandom(90)
    for r in range(rounds):
        items = [e + b"%d" % r for e in events]
        if form == "push":
            out = [resp("LPUSH", "rf:events", *items), resp("DEL", "rf:events")]
        elif form.startswith("take"):
            out = [resp("LPUSH", "rf:events", *items)]
            if form == "take-script":
                out.append(resp("EVALSHA", fetch, 2, "rf:events", "rf:inflight", batch))
            else:
                out += [resp("LMOVE", "rf:events", "rf:inflight", "RIGHT", "LEFT")] * batch
            out.append(resp("DEL", "rf:inflight"))
        else:
            out = [resp("LPUSH", "rf:inflight", *items)]
            if form == "flush-script":
                args = ["rf:node", 2 * batch]
                for item in items:
                    args += ["", ack, item, done]
                out.append(resp("EVALSHA", flush, 1, "rf:inflight", *args))
            else:
                out.append(resp("MULTI"))
                out += [resp("LREM", "rf:inflight", -1, item) for item in items]
                out.append(resp("PUBLISH", "rf:node", (ack + done) * batch))
                out.append(resp("EXEC"))
        yield b"".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=640, help="bytes of an event (640: one with a handshake)")
    parser.add_argument("--batch", type=int, default=10, help="events per take or flush")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()

    redis = Redis(opts.port)
    subscriber = Redis(opts.port)
    subscriber.sock.sendall(resp("SUBSCRIBE", "rf:node"))
    subscriber.sock.setblocking(False)
    fetch = hashlib.sha1(script("FETCH").encode()).hexdigest()
    flush = hashlib.sha1(script("FLUSH").encode()).hexdigest()
    redis.call("SCRIPT", "LOAD", script("FETCH"))
    redis.call("SCRIPT", "LOAD", script("FLUSH"))
    redis.call("DEL", "rf:events", "rf:inflight")

    forms = ["take-script", "take-lmove", "flush-script", "flush-multi", "push"]
    results = {form: [] for form in forms}
    for _ in range(opts.repeat):
        for form in forms:
            data = list(blocks(form, opts.size, opts.batch, opts.rounds, fetch, flush))
            before = redis.cpu()
            for i in range(0, len(data), 10):
                redis.sock.sendall(b"".join(data[i : i + 10]))
                redis.drain()
                try:
                    while subscriber.sock.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
            spent = redis.cpu() - before
            results[form].append(spent * 1e6 / (opts.rounds * opts.batch))
    print(f"Redis CPU per event (µs), events of {opts.size} bytes, batches of {opts.batch}")
    for form in forms:
        runs = sorted(results[form])
        print(f"{form:13} median {runs[len(runs) // 2]:.2f}  runs {' '.join(f'{x:.2f}' for x in runs)}")
    median = {form: sorted(results[form])[len(results[form]) // 2] for form in forms}
    floor = median["take-lmove"] + median["flush-multi"] - median["push"]
    print(f"{'floor':13} {floor:.2f}  (take-lmove + flush-multi - push)")


if __name__ == "__main__":
    main()
