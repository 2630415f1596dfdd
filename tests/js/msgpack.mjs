// Stock socket.io-client with socket.io-msgpack-parser against io-nodes
// started with `--parser msgpack` (--urls=A,B), on --transport: admission
// (the connection handler's welcome), binary arguments both ways through an
// app-node, acks, a room across io-nodes. With --mismatch=default a client of
// the default parser must get a readable connect_error, not a retry loop;
// with --mismatch=msgpack the same for a msgpack client of a default node.
import parser from "socket.io-msgpack-parser";
import { io } from "socket.io-client";
import { main, urls, args, waitFor, sleep, TRANSPORTS } from "./lib.mjs";

const transport = TRANSPORTS[args.transport || "websocket"];

function open(url, withParser, opts = {}) {
  return io(url, {
    forceNew: true,
    reconnection: false,
    timeout: 10000,
    ...transport,
    ...(withParser ? { parser } : {}),
    ...opts,
  });
}

async function refused(url, withParser) {
  const socket = open(url, withParser, { reconnection: true, reconnectionDelay: 100 });
  const [error] = await waitFor(socket, "connect_error", 10000);
  // Final: no reconnection attempt follows a connect_error from the server.
  let attempts = 0;
  socket.io.on("reconnect_attempt", () => attempts++);
  await sleep(1000);
  socket.close();
  return { message: error.message, attempts };
}

main(async () => {
  if (args.mismatch === "default") return refused(urls[0], false);
  if (args.mismatch === "msgpack") return refused(urls[0], true);
  const [A, B] = urls;
  const a = open(A, true, { auth: { rooms: ["r"] } });
  const welcome = waitFor(a, "welcome", 10000);
  await waitFor(a, "connect", 10000);
  const [hello] = await welcome;
  const b = open(B, true);
  await waitFor(b, "connect", 10000);
  // Binary both ways through an app-node: echo sends the same arguments back.
  const echoed = waitFor(a, "echo", 10000);
  await a.timeout(5000).emitWithAck("echo", Buffer.from([1, 2, 3]), { n: 1 });
  const [bytes, object] = await echoed;
  // A room across io-nodes.
  const got = waitFor(a, "news", 10000);
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "news", data: "hi" });
  const [news] = await got;
  const welcomed = hello.sid === a.id;
  a.close();
  b.close();
  return {
    welcome: welcomed,
    echoed: [Array.from(bytes), object],
    news,
  };
}, 60000);
