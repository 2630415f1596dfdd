// Rooms, broadcasts, acks both ways, binary, namespaces, admission, ordering
// and server-side disconnects across two io-nodes (--urls=A,B) served by the
// test app-node (tests/app). Every delivery is counted: each recipient must
// get an emit exactly once, and non-recipients never.
import assert from "node:assert/strict";
import { collect, connect, connectError, main, sleep, urls, waitFor, TRANSPORTS } from "./lib.mjs";

const [A, B] = urls;

/** Emits `ev` through the test app and waits for its ack. */
const ask = (socket, ev, ...rest) => socket.timeout(5000).emitWithAck(ev, ...rest);

main(async () => {
  const report = {};

  // --- admission -----------------------------------------------------------
  const a = await connect(A, { ...TRANSPORTS.websocket, auth: { rooms: ["r1"], data: { name: "a" } } });
  // The connection handler's emit was held until CONNECT: it is the first
  // event the socket gets (possibly in a later read than CONNECT itself).
  for (let i = 0; i < 100 && a.early.length === 0; i++) await sleep(20);
  const welcome = a.early[0];
  assert.ok(welcome && welcome[0] === "welcome", "welcome is the first event after CONNECT");
  assert.equal(welcome[1].sid, a.id);
  assert.ok(a.id.startsWith("io0."), `socket ids name their io-node: ${a.id}`);

  const rejected = await connectError(B, { auth: { reject: "go away", rejectData: { code: 42 } } });
  assert.equal(rejected.message, "go away");
  assert.deepEqual(rejected.data, { code: 42 });
  assert.equal((await connectError(A + "/nowhere")).message, "Invalid namespace");
  report.admission = "ok";

  // --- rooms across io-nodes ------------------------------------------------
  const b = await connect(B, { ...TRANSPORTS.polling, auth: { data: { name: "b" } } });
  const c = await connect(B, { ...TRANSPORTS.upgrade });
  assert.equal(await ask(b, "join", "r1"), true);
  assert.equal(await ask(c, "join", "r2"), true);
  assert.equal(await ask(b, "join", "r2"), true);

  const gotA = collect(a, "news");
  const gotB = collect(b, "news");
  const gotC = collect(c, "news");
  await ask(a, "toRoom", { rooms: ["r1"], event: "news", data: 1 });
  await ask(c, "toRoom", { rooms: ["r1", "r2"], event: "news", data: 2 });
  await ask(a, "toRoom", { rooms: ["r1"], except: "r2", event: "news", data: 3 });
  await ask(a, "toRoom", { sids: [c.id, b.id], event: "news", data: 4 });
  await ask(c, "toRoom", { rooms: [a.id], event: "news", data: 5 });
  await sleep(300);
  const values = (got) => got.map((g) => g[0]).sort();
  assert.deepEqual(values(gotA), [1, 2, 3, 5], "a: r1, r1+r2 once, r1-except-r2, its own id");
  assert.deepEqual(values(gotB), [1, 2, 4], "b: in r1 and r2 but gets the r1+r2 emit once; excluded by r2");
  assert.deepEqual(values(gotC), [2, 4], "c: only r2 and by id");
  report.rooms = "ok";

  // --- broadcast and all ----------------------------------------------------
  const bcA = collect(a, "hello");
  const bcB = collect(b, "hello");
  const bcC = collect(c, "hello");
  await ask(b, "broadcast", { event: "hello", data: "from b" });
  await ask(a, "all", { event: "hello", data: "to all" });
  await sleep(300);
  assert.deepEqual(bcA.map((x) => x[0]).sort(), ["from b", "to all"]);
  assert.deepEqual(bcB.map((x) => x[0]).sort(), ["to all"], "broadcast skips its sender");
  assert.deepEqual(bcC.map((x) => x[0]).sort(), ["from b", "to all"]);
  report.broadcast = "ok";

  // --- leave ---------------------------------------------------------------
  assert.equal(await ask(b, "leave", "r1"), true);
  const afterLeave = collect(b, "late");
  await ask(a, "toRoom", { rooms: ["r1"], event: "late", data: 1 });
  await sleep(200);
  assert.equal(afterLeave.length, 0);
  report.leave = "ok";

  // --- acks both ways ------------------------------------------------------
  const app = await ask(a, "slow", 10);
  assert.match(app, /^app\d+$/);
  for (const socket of [a, b]) socket.on("question", (q, reply) => reply({ answer: q.x * 2 }));
  assert.deepEqual(await ask(a, "ask", { event: "question", data: { x: 21 } }), { answer: [{ answer: 42 }] });
  assert.deepEqual(await ask(b, "ask", { event: "question", data: { x: 1 } }), { answer: [{ answer: 2 }] });
  report.acks = "ok";

  // --- binary both ways, over each transport --------------------------------
  for (const socket of [a, b, c]) {
    const bytes = Buffer.from([1, 2, 3, 0, 255]);
    socket.emit("echo", "bin", bytes, { deep: [Buffer.from("x")] });
    const [label, gotBytes, nested] = await waitFor(socket, "echo");
    assert.equal(label, "bin");
    assert.ok(Buffer.from(gotBytes).equals(bytes));
    assert.equal(Buffer.from(nested.deep[0]).toString(), "x");
  }
  report.binary = "ok";

  // --- several namespaces on one connection --------------------------------
  const other = a.io.socket("/other", { auth: { data: { ns: "other" } } });
  await new Promise((resolve, reject) => {
    other.once("connect", resolve);
    other.once("connect_error", reject);
    other.connect();
  });
  assert.deepEqual(await ask(other, "state"), { rooms: [], data: { ns: "other" } });
  assert.deepEqual(await ask(a, "state"), { rooms: ["r1"], data: { name: "a" } });
  other.disconnect();
  report.namespaces = "ok";

  // --- per-socket order: each handler sees the previous handlers' data -----
  const ordered = await connect(A, { auth: { data: [] } });
  for (let i = 0; i < 50; i++) ordered.emit("append", i);
  const state = await ask(ordered, "state");
  assert.deepEqual(state.data, [...Array(50).keys()]);
  // Events that pile up behind a slow one reach the app-node as one queue
  // item; each handler still sees the joins and leaves of those before it.
  ordered.emit("slow", 200);
  ordered.emit("join", "o1");
  ordered.emit("join", "o2");
  ordered.emit("leave", "o1");
  ordered.emit("append", "last");
  const after = await ask(ordered, "state");
  assert.deepEqual(after.rooms.filter((r) => r.startsWith("o")).sort(), ["o2"]);
  assert.deepEqual(after.data, [...Array(50).keys(), "last"]);
  ordered.close();
  report.order = "ok";

  // --- an event emitted right after CONNECT is never lost -------------------
  for (let i = 0; i < 5; i++) {
    const quick = await connect(i % 2 ? A : B, { auth: { data: [] } });
    quick.emit("append", "first");
    assert.deepEqual((await ask(quick, "state")).data, ["first"]);
    quick.close();
  }
  report.early_events = "ok";

  // --- server-side disconnects ----------------------------------------------
  const kicked = await connect(B);
  const reason = new Promise((r) => kicked.once("disconnect", r));
  kicked.emit("kick");
  assert.equal(await reason, "io server disconnect");
  const closed = await connect(A);
  const closedReason = new Promise((r) => closed.once("disconnect", r));
  closed.emit("close");
  // The whole connection closed, each namespace told first: the client
  // sees the server's disconnect and does not reconnect on its own.
  assert.equal(await closedReason, "io server disconnect");
  assert.equal(closed.active, false);
  report.disconnects = "ok";

  for (const socket of [a, b, c]) socket.close();
  return report;
});
