// Many stock clients recover at once: --clients sockets in room "r" on the
// first io-node, which is killed (--pid, SIGKILL); while they are away the
// second io-node's client sends --messages to the room. Every client must
// come back (to the second io-node) recovered, with the same id, and get
// every message once, in order.
import { io } from "socket.io-client";
import { main, urls, args, sleep, waitFor } from "./lib.mjs";

const clients = Number(args.clients || 200);
const messages = Number(args.messages || 3);

function open(url) {
  const socket = io(url, {
    forceNew: true,
    transports: ["websocket"],
    reconnectionDelay: 1000,
    reconnectionDelayMax: 3000,
    timeout: 20000,
  });
  socket.got = [];
  socket.on("gap", (n) => socket.got.push(n));
  socket.io.on("reconnect_attempt", () => {
    socket.io.uri = urls[1];
  });
  return socket;
}

const connected = (socket, ms = 30000) => (socket.connected ? Promise.resolve() : waitFor(socket, "connect", ms));

main(async () => {
  const b = open(urls[1]);
  await connected(b);
  const sockets = [];
  for (let i = 0; i < clients; i += 50) {
    const batch = [...Array(Math.min(50, clients - i)).keys()].map(() => open(urls[0]));
    await Promise.all(batch.map((s) => connected(s)));
    sockets.push(...batch);
  }
  const ids = sockets.map((s) => s.id);
  await Promise.all(sockets.map((s) => s.timeout(10000).emitWithAck("join", "r")));
  const lost = Promise.all(sockets.map((s) => waitFor(s, "disconnect", 15000)));
  process.kill(Number(args.pid), "SIGKILL");
  await lost;
  const started = Date.now();
  for (let n = 0; n < messages; n++) {
    await b.timeout(10000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: n });
  }
  await Promise.all(sockets.map((s) => connected(s, 60000)));
  const back = (Date.now() - started) / 1000;
  const deadline = Date.now() + 30000;
  while (sockets.some((s) => s.got.length < messages) && Date.now() < deadline) await sleep(100);
  await sleep(500);
  const result = {
    clients,
    recovered: sockets.filter((s) => s.recovered).length,
    sameId: sockets.filter((s, i) => s.id === ids[i]).length,
    complete: sockets.filter((s) => JSON.stringify(s.got) === JSON.stringify([...Array(messages).keys()])).length,
    secondsUntilAllBack: back,
  };
  for (const s of sockets) s.close();
  b.close();
  return result;
}, 150000);
