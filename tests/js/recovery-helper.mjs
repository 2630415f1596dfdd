// The browser helper /iocluster.js (run here in Node, with the stock
// socket.io-client) fails over when its io-node is killed (--pids=id:pid,...)
// and, keeping one socket, recovers its session on the new io-node: same
// id, still in its room, and what was sent to the room meanwhile (by an
// app-node and through the admin API) arrives.
import { io } from "socket.io-client";
import { main, args, sleep, waitFor } from "./lib.mjs";
import "../../frontend/iocluster.js";

const pids = Object.fromEntries(args.pids.split(",").map((pair) => pair.split(":")));

async function until(check, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${check}`);
    await sleep(50);
  }
}

main(async () => {
  const statuses = [];
  const conn = globalThis.iocluster.connect({
    io,
    configUrl: `${args.frontend}/config.json`,
    transports: ["websocket"],
    minDelay: 200,
  });
  conn.onStatus((s) => statuses.push(`${s.state}:${s.node}:${s.detail ?? ""}`));
  const got = [];
  conn.on("gap", (data) => got.push(data));
  const first = await until(() => conn.state === "connected" && conn.node);
  const socket = conn.socket;
  const id = socket.id;
  if (!(await conn.emitWithAck("join", "r"))) throw new Error("join failed");
  const other = Object.keys(pids).find((node) => node !== first);
  const b = io(args.urls.split(",")[Object.keys(pids).indexOf(other)], { forceNew: true, transports: ["websocket"] });
  await waitFor(b, "connect", 10000);
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "before" });
  await until(() => got.length === 1);
  process.kill(Number(pids[first]), "SIGKILL");
  await until(() => conn.state !== "connected");
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "while away" });
  // And through the admin API, which keeps retained emits in the log too.
  const published = await fetch(`${args.admin}/api/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${args.key}`, "content-type": "application/json" },
    body: JSON.stringify({ event: "gap", args: ["from the api"], to: { rooms: ["r"] } }),
  });
  if (!published.ok) throw new Error(`publish: ${published.status} ${await published.text()}`);
  const second = await until(() => conn.state === "connected" && conn.node !== first && conn.node);
  await until(() => got.length >= 3);
  await b.timeout(5000).emitWithAck("toRoom", { rooms: ["r"], event: "gap", data: "after" });
  await until(() => got.length >= 4);
  await sleep(300);
  const result = {
    first,
    second,
    sameSocket: conn.socket === socket,
    sameId: socket.id === id,
    recovered: conn.recovered,
    got,
    statuses,
  };
  conn.close();
  b.close();
  return result;
}, 90000);
