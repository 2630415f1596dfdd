// socket.io-client 2.x (Engine.IO v3) against io-nodes with --allow-eio3:
// the implicit connection to "/", acks both ways, binary both ways, a room,
// a second namespace, heartbeats over several ping intervals, a kick.
//
//   --url=URL  --transport=polling|websocket|upgrade  --wait=MS (heartbeats)
import ioV2 from "socket.io-client-v2";
import { args, main, sleep, TRANSPORTS, urls } from "./lib.mjs";

const timeout = (ms, what) =>
  new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms));

/** A v2 socket, connected; events that arrive early are kept. */
function connect(url) {
  const socket = ioV2(url, {
    ...TRANSPORTS[args.transport || "upgrade"],
    forceNew: true,
    reconnection: false,
  });
  socket.early = [];
  socket.on("welcome", (welcome) => socket.early.push(welcome));
  return Promise.race([
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("error", (error) => reject(new Error(`error: ${JSON.stringify(error)}`)));
      socket.once("connect_error", (error) => reject(error));
    }),
    timeout(10000, "no connect"),
  ]);
}

/** Emits and resolves with the ack's arguments. */
const call = (socket, ...rest) =>
  Promise.race([
    new Promise((resolve) => socket.emit(...rest, (...answer) => resolve(answer))),
    timeout(5000, `no ack for ${rest[0]}`),
  ]);

const next = (socket, event) =>
  Promise.race([
    new Promise((resolve) => socket.once(event, (...rest) => resolve(rest))),
    timeout(5000, `no ${event}`),
  ]);

main(async () => {
  const url = args.url || urls[0];
  const socket = await connect(url);
  const disconnects = [];
  socket.on("disconnect", (reason) => disconnects.push(reason));
  let pongs = 0;
  socket.io.on("pong", () => pongs++);
  const welcome = socket.early[0] || (await next(socket, "welcome"))[0];

  const acks = [];
  for (let i = 0; i < 5; i++) acks.push(await call(socket, "ack", i, { n: i }));
  // A burst without waiting: answered in order.
  const burst = await Promise.all(
    Array.from({ length: 20 }, (_, i) => call(socket, "ack", i)),
  );
  const binaryAck = await call(socket, "ack", Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) });
  const echoed = next(socket, "echo");
  socket.emit("echo", { blob: Buffer.from([9, 8, 7]) });
  const [echo] = await echoed;

  const joined = await call(socket, "join", "eio3-room");
  const news = next(socket, "news");
  await call(socket, "toRoom", { rooms: ["eio3-room"], event: "news", data: "to the room" });
  const [roomNews] = await news;

  // The server asks, the client acknowledges.
  socket.on("question", (value, ack) => ack(`answer to ${value}`));
  const [asked] = await call(socket, "ask", { event: "question", data: 42 });

  const other = await connect(`${url}/other?token=abc`);
  const otherWelcome = other.early[0] || (await next(other, "welcome"))[0];
  const otherAck = await call(other, "ack", "other");
  other.close();

  // Heartbeats: the client pings, the node answers, nobody is cut off.
  const wait = Number(args.wait || 0);
  if (wait) await sleep(wait);
  const afterWait = await call(socket, "ack", "still here");

  const transport = socket.io.engine.transport.name;
  const disconnectsBefore = [...disconnects];
  const kicked = next(socket, "disconnect");
  socket.emit("kick");
  const [kickReason] = await kicked;
  return {
    welcome: typeof welcome?.sid === "string",
    acks,
    burst: burst.map(([n]) => n),
    binaryAck: [Buffer.isBuffer(binaryAck[0]) ? [...binaryAck[0]] : binaryAck[0], binaryAck[1]?.nested ? [...binaryAck[1].nested] : null],
    echo: echo && Buffer.isBuffer(echo.blob) ? [...echo.blob] : echo,
    joined: joined[0],
    roomNews,
    asked,
    otherWelcome: typeof otherWelcome?.sid === "string",
    otherAck,
    afterWait,
    pongs,
    transport,
    disconnects: disconnectsBefore,
    kickReason,
  };
}, 90000);
