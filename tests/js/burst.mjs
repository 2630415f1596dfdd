// One stock client per transport emits a burst of acked events at once,
// far more than an io-node lets wait per socket (max_pending_events): the
// io-node slows it down instead of cutting it off, and every ack comes back,
// in the order the events were sent.
//
//   node burst.mjs --urls=http://127.0.0.1:3001 --events=2000
import { connect, main, urls, args, TRANSPORTS } from "./lib.mjs";

const events = Number(args.events || 2000);

async function burst(name, transport) {
  const socket = await connect(urls[0], transport);
  let disconnected = null;
  socket.on("disconnect", (reason) => {
    disconnected = reason;
  });
  const order = [];
  const start = process.hrtime.bigint();
  await Promise.all(
    [...Array(events).keys()].map((i) =>
      socket
        .timeout(120000)
        .emitWithAck("slow", 0)
        .then(() => order.push(i)),
    ),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (disconnected) throw new Error(`${name}: disconnected (${disconnected})`);
  const outOfOrder = order.findIndex((n, i) => n !== i);
  if (outOfOrder >= 0) throw new Error(`${name}: ack ${order[outOfOrder]} came at ${outOfOrder}`);
  socket.close();
  return { acks: order.length, events_per_s: Math.round(events / seconds) };
}

main(async () => {
  const result = {};
  for (const [name, transport] of Object.entries(TRANSPORTS)) {
    result[name] = await burst(name, transport);
  }
  return result;
}, 300000);
