// Stock clients (default reconnection) connect while no app-node runs, on
// each transport, and wait: an io-node closes a connection no app-node
// admits in time, the client reconnects and asks again, and once an app-node
// is back every client is admitted and answered. Never a final refusal.
//
//   node outage.mjs --urls=http://127.0.0.1:3001,http://127.0.0.1:3002 --clients=3
import { io } from "socket.io-client";
import { main, urls, args, TRANSPORTS } from "./lib.mjs";

const clients = Number(args.clients || 3);

function admitted(url, transport) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      forceNew: true,
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      ...transport,
    });
    let attempts = 0;
    socket.io.on("reconnect_attempt", () => attempts++);
    socket.on("connect", () => resolve({ socket, attempts }));
    socket.on("connect_error", (err) => {
      // A refusal the client takes as final (the server said no).
      if (!socket.active) reject(new Error(`refused: ${err.message}`));
    });
  });
}

main(async () => {
  const result = {};
  await Promise.all(
    ["websocket", "polling"].map(async (name) => {
      const sockets = await Promise.all(
        [...Array(clients).keys()].map((i) => admitted(urls[i % urls.length], TRANSPORTS[name])),
      );
      const answers = await Promise.all(
        sockets.map(({ socket }) => socket.timeout(20000).emitWithAck("slow", 0)),
      );
      for (const { socket } of sockets) socket.close();
      result[name] = {
        admitted: sockets.length,
        answered: answers.length,
        reconnects: sockets.reduce((sum, { attempts }) => sum + attempts, 0),
      };
    }),
  );
  return result;
}, 90000);
