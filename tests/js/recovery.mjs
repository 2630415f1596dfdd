// Connection state recovery with the stock client, across io-nodes.
//
// Client A (a user, in room "r", with socket data) and client C (that never
// received anything) connect to the first io-node; B, on another io-node,
// sends what A and C miss. Then the first io-node goes away (--mode=kill:
// SIGKILL of --pid, term: SIGTERM, drop: A's and C's own transports closed
// by the client side) and the clients come back to --target=other (the
// next URL, as the frontend's browser helper fails over) or same. While they
// are away, B sends to A's room, to A's socket id, to A's user and to
// everyone. Each must arrive once, in order; A and C must be `recovered`
// with the same id; A's rooms and data must be back; live traffic follows.
//
// --mode=late: A drops its transport and stays away longer than the
// recovery window (--window ms): it gets a new session, `recovered` false.
import crypto from "node:crypto";
import { io } from "socket.io-client";
import { main, urls, args, sleep, waitFor, TRANSPORTS } from "./lib.mjs";

const mode = args.mode || "kill";
const transport = TRANSPORTS[args.transport || "websocket"];
const target = args.target === "same" ? urls[0] : urls[1];
const secret = args.secret || "recovery-test-secret";
const window = Number(args.window || 0);

/** An HS256 JWT for `sub`, as the io-node's --jwt-secret verifies. */
function jwt(sub) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const mac = crypto.createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${mac}`;
}

function open(url, auth) {
  const socket = io(url, {
    forceNew: true,
    ...transport,
    auth,
    reconnectionDelay: 1500,
    reconnectionDelayMax: 1500,
    randomizationFactor: 0,
    timeout: 10000,
  });
  socket.gaps = [];
  socket.on("gap", (...rest) => socket.gaps.push(rest));
  // Where it goes when its connection is lost.
  socket.io.on("reconnect_attempt", () => {
    socket.io.uri = target;
  });
  return socket;
}

const connected = (socket) => (socket.connected ? Promise.resolve() : waitFor(socket, "connect", 15000));

/** Resolves once `socket` has `n` gap events (or fails after `ms`). */
async function gaps(socket, n, ms = 20000) {
  const deadline = Date.now() + ms;
  while (socket.gaps.length < n) {
    if (Date.now() > deadline) throw new Error(`${socket.gaps.length} of ${n} gap events: ${JSON.stringify(socket.gaps)}`);
    await sleep(50);
  }
  await sleep(300); // anything more (a duplicate) would show by now
  return socket.gaps.map((args) => args[0]);
}

main(async () => {
  const a = open(urls[0], { token: jwt("ann"), data: { n: 7 } });
  const c = open(urls[0], {});
  const b = open(urls[1], {});
  await Promise.all([connected(a), connected(b), connected(c)]);
  const aid = a.id;
  const cid = c.id;
  if (!(await a.timeout(5000).emitWithAck("join", "r"))) throw new Error("join failed");
  // A sees one retained emit before the loss, so it has an offset.
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "pre" });
  await gaps(a, 1);
  const offsets = a.gaps.map((args) => args[args.length - 1]);

  if (mode === "late") {
    a.io.reconnection(false);
    const gone = waitFor(a, "disconnect", 5000);
    a.io.engine.close();
    await gone;
    await sleep(window + 3000);
    a.io.reconnection(true);
    a.connect();
    await connected(a);
    const state = await a.timeout(5000).emitWithAck("state");
    return { recovered: a.recovered, sameId: a.id === aid, oldId: aid, newId: a.id, rooms: state.rooms };
  }

  const lost = Promise.all([waitFor(a, "disconnect", 15000), waitFor(c, "disconnect", 15000)]);
  if (mode === "kill") process.kill(Number(args.pid), "SIGKILL");
  else if (mode === "term") process.kill(Number(args.pid), "SIGTERM");
  else {
    a.io.engine.close();
    c.io.engine.close();
  }
  const reasons = (await lost).map((rest) => rest[0]);
  // While they are away: to the room, to A's id, to A's user, to all.
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "room" });
  await b.timeout(5000).emitWithAck("toRoom", { sids: [aid], event: "gap", data: "socket" });
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["$user:ann"], event: "gap", data: "user" });
  await b.timeout(5000).emitWithAck("all", { event: "gap", data: "all" });
  await Promise.all([connected(a), connected(c)]);
  const during = { a: await gaps(a, 5), c: await gaps(c, 1) };
  // Live traffic after the recovery, and the state the app-node sees.
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "live" });
  await b.timeout(5000).emitWithAck("toRoom", { sids: [aid], event: "gap", data: "direct" });
  await gaps(a, 7);
  // And once more: a socket recovered already recovers again.
  const gone = waitFor(a, "disconnect", 5000);
  a.io.engine.close();
  await gone;
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "again" });
  await connected(a);
  const after = await gaps(a, 8);
  const state = await a.timeout(5000).emitWithAck("state");
  const result = {
    reasons,
    recovered: [a.recovered, c.recovered],
    sameId: [a.id === aid, c.id === cid],
    a: after,
    c: during.c,
    rooms: state.rooms,
    data: state.data,
    offsetsLookRight: offsets.every((o) => typeof o === "string" && /^\d+-\d+$/.test(o)),
  };
  a.close();
  b.close();
  c.close();
  return result;
}, 90000);
