// Not a test: a measurement for docs/RELIABILITY.md. One address opens
// --count polling handshakes that never continue (--concurrency at a time)
// while a real stock client connects every 500 ms; prints how the flood's
// handshakes were answered and whether the real client got in each time.
import http from "node:http";
import { io } from "socket.io-client";
import { main, args, sleep } from "./lib.mjs";

const url = new URL(args.url);
const count = Number(args.count || 100000);
const concurrency = Number(args.concurrency || 100);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });

function handshake() {
  return new Promise((resolve) => {
    const req = http.get(
      { host: url.hostname, port: url.port, path: "/socket.io/?EIO=4&transport=polling", agent, localAddress: args.from || undefined },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      },
    );
    req.on("error", () => resolve("error"));
  });
}

main(async () => {
  const statuses = {};
  let sent = 0;
  let done = false;
  const started = Date.now();
  const flood = Promise.all(
    [...Array(concurrency).keys()].map(async () => {
      while (sent < count) {
        sent++;
        const status = await handshake();
        statuses[status] = (statuses[status] || 0) + 1;
      }
    }),
  );
  const real = [];
  const probe = (async () => {
    while (!done) {
      const t0 = Date.now();
      const ok = await new Promise((resolve) => {
        const s = io(args.url, { forceNew: true, reconnection: false, transports: ["polling"], timeout: 5000 });
        s.on("connect", () => { s.close(); resolve(true); });
        s.on("connect_error", () => { s.close(); resolve(false); });
      });
      real.push({ ok, ms: Date.now() - t0 });
      await sleep(500);
    }
  })();
  await flood;
  const floodSeconds = (Date.now() - started) / 1000;
  done = true;
  await probe;
  return {
    count,
    floodSeconds,
    statuses,
    realAttempts: real.length,
    realConnected: real.filter((r) => r.ok).length,
    realMaxMs: Math.max(...real.map((r) => r.ms)),
  };
}, 600000);
