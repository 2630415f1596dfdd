// --clients sockets spread over the io-nodes each emit --events "slow" events
// (--slow ms each) one after another and wait for every ack; with --burst
// each socket emits all of them at once (they pile up in the io-node and
// travel to the app-nodes several to a queue item). Used while the Rust test
// kills app-nodes: every ack must still arrive.
import assert from "node:assert/strict";
import { connect, main, urls, TRANSPORTS } from "./lib.mjs";
import { args } from "./lib.mjs";

const clients = Number(args.clients || 10);
const events = Number(args.events || 10);
const slow = Number(args.slow || 0);
const ackTimeout = Number(args.ackTimeout || 15000);
const burst = args.burst !== undefined;

main(async () => {
  const sockets = await Promise.all(
    [...Array(clients).keys()].map((i) => connect(urls[i % urls.length], TRANSPORTS.websocket)),
  );
  const apps = {};
  let acked = 0;
  await Promise.all(
    sockets.map(async (socket) => {
      const one = async () => {
        const app = await socket.timeout(ackTimeout).emitWithAck("slow", slow);
        apps[app] = (apps[app] || 0) + 1;
        acked++;
      };
      if (burst) {
        await Promise.all([...Array(events).keys()].map(one));
      } else {
        for (let i = 0; i < events; i++) await one();
      }
    }),
  );
  assert.equal(acked, clients * events);
  for (const socket of sockets) socket.close();
  return { acked, apps };
}, 120000);
