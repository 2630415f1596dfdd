// The benchmark contract on Node Socket.IO 4 with @socket.io/redis-adapter
// (what most Socket.IO clusters run today). Run one process per port:
//   node server.mjs PORT REDIS_URL
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const [port, redisUrl] = process.argv.slice(2);
const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, { adapter: createAdapter(pub, sub), cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack(true);
  });
  socket.on("echo", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack(...args);
  });
  socket.on("bcast", ({ room, payload }) => {
    io.to(room).emit("tick", payload);
  });
});
http.listen(Number(port), "127.0.0.1", () => console.log(`node socket.io on ${port}`));
