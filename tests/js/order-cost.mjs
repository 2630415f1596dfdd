// Measures what per-socket ordering costs: the same number of events, all
// emitted at once (each with an ack, at most 200 in flight per socket), from 1, 10 and 100 sockets. A socket's
// events are handled one at a time, so one socket gets one event per round
// trip through Redis and an app-node, while many sockets are handled in
// parallel across app-nodes.
//
//   node order-cost.mjs --urls=http://127.0.0.1:3001,http://127.0.0.1:3002 --events=2000
import { connect, main, urls, args, TRANSPORTS } from "./lib.mjs";

const total = Number(args.events || 2000);
const rounds = Number(args.rounds || 3);

async function run(clients) {
  const sockets = await Promise.all(
    [...Array(clients).keys()].map((i) => connect(urls[i % urls.length], TRANSPORTS.websocket)),
  );
  const each = Math.floor(total / clients);
  const start = process.hrtime.bigint();
  // At most `window` events of a socket in flight: the io-node refuses more
  // than max_pending_events (256) waiting per socket.
  const window = Math.min(each, 200);
  await Promise.all(
    sockets.map(async (socket) => {
      let sent = 0;
      const lane = async () => {
        while (sent < each) {
          sent++;
          await socket.timeout(120000).emitWithAck("slow", 0);
        }
      };
      await Promise.all([...Array(window).keys()].map(lane));
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  for (const socket of sockets) socket.close();
  return (each * clients) / seconds;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

main(async () => {
  const rates = { 1: [], 10: [], 100: [] };
  for (let r = 0; r < rounds; r++) {
    for (const clients of Object.keys(rates)) rates[clients].push(await run(Number(clients)));
  }
  const result = {};
  for (const [clients, xs] of Object.entries(rates)) {
    result[`${clients}_sockets_events_per_s`] = Math.round(median(xs));
  }
  result.one_socket_vs_100 = +(median(rates[1]) / median(rates[100])).toFixed(3);
  return result;
}, 600000);
