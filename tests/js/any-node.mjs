// Sessions served by any io-node: stock clients behind --url, a proxy with no
// affinity (tests/src/proxy.rs), so each of a session's requests may reach
// another io-node than the one holding the session.
//
// --mode=traffic (--transport=polling or upgrade): --clients each join room
//   "any", emit --messages acked `ack` events in sequence, then --burst `ack`
//   and `echo` events without waiting; three of them send `news` to the
//   room. With upgrade, each client first waits for its WebSocket upgrade,
//   also answers an `ask` (the app-node's emit with an ack) and lives
//   through --pings heartbeats. Prints what each client got; nothing is
//   judged here but timeouts. Every session ends with a `kick` (the
//   app-node disconnects it), so the test knows how each one ended.
// --mode=kill: --clients connect (reconnection and connection state
//   recovery on) and join "any"; each emits acked `ack` events in a loop
//   while a broadcaster, connected straight to the last of --urls, sends
//   numbered `tick` events to the room; once that flows the scenario tells
//   the test ({ready, clients}). The test kills an io-node and writes
//   {lose: [socket ids]} (the clients that must lose their connection); the
//   scenario waits until each of them, and any other client that lost its
//   connection, is back, lets the traffic run on, stops it, checks a new
//   client, and prints what each client got. With --lossy a client's
//   missing ticks are reported rather than fatal.
import { EventEmitter } from "node:events";
import { io } from "socket.io-client";
import { main, args, urls, connect, waitFor, recorder, inputLines, tell, sleep, TRANSPORTS } from "./lib.mjs";

const url = args.url;
const mode = args.mode || "traffic";
const transport = TRANSPORTS[args.transport || "polling"];
const clients = Number(args.clients || 20);
const messages = Number(args.messages || 10);
const burst = Number(args.burst || 5);
const pings = Number(args.pings || 0);
// --lossy (kill mode): a client may miss ticks (a Redis restarted empty
// loses the frames it was carrying on relayed links, and the log that would
// replay them); the test judges which. Without it a missing tick fails.
const lossy = args.lossy !== undefined;
const T = 15000;

const range = (from, n) => [...Array(n).keys()].map((k) => from + k);

/** Resolves once the socket's Engine.IO connection runs on WebSocket. */
function upgraded(socket, ms = T) {
  const engine = socket.io.engine;
  if (engine.transport.name === "websocket") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no upgrade within ${ms} ms (on ${engine.transport.name})`)), ms);
    engine.once("upgrade", () => {
      clearTimeout(timer);
      resolve();
    });
    engine.once("upgradeError", (err) => {
      clearTimeout(timer);
      reject(new Error(`upgrade failed: ${err.message}`));
    });
  });
}

/** Resolves after the socket's Engine.IO connection has received `n` more pings. */
function heartbeats(socket, n, ms) {
  const engine = socket.io.engine;
  return new Promise((resolve, reject) => {
    let seen = 0;
    const timer = setTimeout(() => reject(new Error(`${seen} of ${n} pings within ${ms} ms`)), ms);
    const onPing = () => {
      seen += 1;
      if (seen === n) {
        clearTimeout(timer);
        engine.off("ping", onPing);
        resolve(seen);
      }
    };
    engine.on("ping", onPing);
  });
}

/** Ends a session from the app-node's side (`kick`), so the test sees
 * exactly how it ended; resolves with the client's disconnect reason. */
async function kicked(socket) {
  const gone = waitFor(socket, "disconnect", T);
  socket.emit("kick");
  const [reason] = await gone;
  return reason;
}

/** Keeps what the server answered to each failed request of `socket`'s
 * connection (read at once: the request is reset right after). */
function watch(socket) {
  socket.refusals = [];
  socket.io.on("error", (err) => {
    const context = err && err.context;
    const said = context && context.responseText ? `: ${context.responseText}` : "";
    socket.refusals.push(`${err && err.message}${err && err.description !== undefined ? ` (${err.description})` : ""}${said}`);
  });
  socket.on("connect_error", (err) => socket.refusals.push(`connect_error: ${err && err.message}`));
  return socket;
}

async function open(i) {
  const socket = watch(io(url, { forceNew: true, reconnection: false, ...transport, timeout: T }));
  try {
    await waitFor(socket, "connect", T);
    return socket;
  } catch (err) {
    socket.close();
    throw new Error(`client ${i} could not connect through ${url}: ${JSON.stringify(socket.refusals)}`);
  }
}

/** Mode traffic: acks in order, a burst, echoes and room news for every client. */
async function traffic() {
  const sockets = await Promise.all(range(0, clients).map(open));
  const state = sockets.map((s, i) => ({
    socket: s,
    i,
    id: s.id,
    disconnects: recorder(s, "disconnect"),
    echoes: recorder(s, "echo"),
    news: recorder(s, "news"),
  }));
  for (const c of state) {
    c.socket.on("question", (data, answer) => answer({ twice: data * 2 }));
  }
  const upgrade = transport.transports.includes("websocket");
  if (upgrade) await Promise.all(state.map((c) => upgraded(c.socket)));
  for (const c of state) {
    c.engine = c.socket.io.engine.id;
    c.transport = c.socket.io.engine.transport.name;
  }
  const joined = await Promise.all(state.map((c) => c.socket.timeout(T).emitWithAck("join", "any")));

  await Promise.all(
    state.map(async (c) => {
      const s = c.socket;
      c.sequence = [];
      for (const k of range(0, messages)) {
        const back = await s.timeout(T).emitWithAck("ack", { c: c.i, k });
        c.sequence.push(back.c === c.i ? back.k : `client ${back.c}`);
      }
      // A burst without waiting: acks must come back in the order sent.
      c.burst = [];
      const acks = range(messages, burst).map((k) =>
        s
          .timeout(T)
          .emitWithAck("ack", { c: c.i, k })
          .then((back) => c.burst.push(back.c === c.i ? back.k : `client ${back.c}`)),
      );
      for (const k of range(messages, burst)) s.emit("echo", { c: c.i, k });
      await Promise.all(acks);
      await c.echoes.until(burst, T);
      if (upgrade) c.asked = await s.timeout(T).emitWithAck("ask", { event: "question", data: c.i });
    }),
  );

  // News to the room from three clients; every client must get each once.
  const senders = state.slice(0, 3);
  await Promise.all(
    senders.map((c) => c.socket.timeout(T).emitWithAck("toRoom", { rooms: ["any"], event: "news", data: c.i })),
  );
  await Promise.all(state.map((c) => c.news.until(senders.length, T)));

  if (pings > 0) {
    // Several heartbeats on the (relayed) connection, counted as they come.
    await Promise.all(state.map((c) => heartbeats(c.socket, pings, pings * 5000 + T)));
  }

  // Where each session lives, as the cluster's presence sees it.
  const fetched = await state[0].socket.timeout(T).emitWithAck("fetch", { room: "any" });
  const nodeOf = Object.fromEntries((fetched.sockets || []).map((s) => [s.id, s.node]));
  // One more round trip each: anything late (a duplicate) would be in by now.
  const last = await Promise.all(state.map((c) => c.socket.timeout(T).emitWithAck("ack", { c: c.i, k: "last" })));

  const result = {
    clients: state.map((c, i) => ({
      id: c.id,
      engine: c.engine,
      node: nodeOf[c.id] || null,
      joined: joined[i],
      transport: c.transport,
      transportAtEnd: c.socket.io.engine.transport.name,
      connected: c.socket.connected,
      sequence: c.sequence,
      burst: c.burst,
      echoes: c.echoes.map((e) => (e.c === c.i ? e.k : `client ${e.c}`)),
      news: [...c.news].sort(),
      asked: c.asked ?? null,
      last: last[i].k,
      disconnects: [...c.disconnects],
      refusals: c.socket.refusals,
    })),
  };
  const ends = await Promise.all(state.map((c) => kicked(c.socket)));
  result.clients.forEach((client, i) => {
    client.end = ends[i];
  });
  return result;
}

/** Mode kill: traffic through an io-node's death (see the top). */
async function kill() {
  const read = inputLines();
  // One after the other (each upgraded before the next starts): each
  // session's upgrade then takes the same turn after its handshake, so the
  // sessions of one io-node upgrade through one other io-node, and the test
  // finds every case (sessions on the killed node, tunnels through it, and
  // neither) next to each other.
  const upgrade = transport.transports.includes("websocket");
  const state = [];
  for (const i of range(0, clients)) {
    const socket = watch(
      io(url, {
        forceNew: true,
        ...transport,
        timeout: T,
        reconnectionDelay: 300,
        reconnectionDelayMax: 1000,
        randomizationFactor: 0,
      }),
    );
    const c = {
      socket,
      i,
      disconnects: [],
      ticks: recorder(socket, "tick"),
      acked: [],
      failed: [],
      connects: 0,
    };
    socket.on("connect", () => {
      c.connects += 1;
      if (c.connects > 1) c.back?.();
    });
    socket.on("disconnect", (reason) => {
      c.disconnects.push(reason);
      c.returned = new Promise((resolve) => {
        c.back = resolve;
      });
    });
    try {
      await waitFor(socket, "connect", T);
      if (upgrade) await upgraded(socket);
    } catch (err) {
      throw new Error(`client ${i} did not connect through ${url}: ${err.message}; ${JSON.stringify(socket.refusals)}`);
    }
    c.id = socket.id;
    state.push(c);
  }
  for (const c of state) {
    if (!(await c.socket.timeout(T).emitWithAck("join", "any"))) throw new Error(`client ${c.i} could not join`);
  }
  const broadcaster = await connect(urls[urls.length - 1], { transports: ["websocket"] });

  let stopping = false;
  // Told of every ack and tick, to wait on the traffic's progress.
  const progress = new EventEmitter();
  const reached = (check) =>
    new Promise((resolve) => {
      const test = () => {
        if (check()) {
          progress.off("step", test);
          resolve();
        }
      };
      progress.on("step", test);
      test();
    });
  const loops = state.map(async (c) => {
    for (let k = 0; !stopping; k++) {
      try {
        const back = await c.socket.timeout(30000).emitWithAck("ack", { c: c.i, k });
        c.acked.push(back.c === c.i ? back.k : `client ${back.c}`);
        progress.emit("step");
      } catch (err) {
        c.failed.push({ k, error: err.message });
      }
      await sleep(25); // pacing, not synchronisation
    }
  });
  let ticks = 0;
  const ticking = (async () => {
    while (!stopping) {
      await broadcaster.timeout(T).emitWithAck("toRoom", { rooms: ["any"], event: "tick", data: ticks });
      ticks += 1;
      progress.emit("step");
      await sleep(50); // pacing
    }
  })();
  // The traffic flows (three acks each, three ticks) before the test acts.
  await reached(() => state.every((c) => c.acked.length >= 3) && ticks >= 3);
  tell({
    ready: true,
    clients: state.map((c) => ({ id: c.id, engine: c.socket.io.engine.id, transport: c.socket.io.engine.transport.name })),
  });


  // The test names the clients that must lose their connection: those
  // whose session was on the killed io-node, and those whose WebSocket ran
  // through it.
  const { lose } = await read();
  const losing = new Set(lose);
  const back = async (c) => {
    try {
      if (losing.has(c.id) && c.disconnects.length === 0) await waitFor(c.socket, "disconnect", 30000);
      if (c.returned) {
        await Promise.race([
          c.returned,
          sleep(60000).then(() => {
            throw new Error("no reconnection within 60 s");
          }),
        ]);
      }
    } catch (err) {
      throw new Error(
        `client ${c.i} (${c.id}) is not back: ${err.message}; disconnects ${JSON.stringify(c.disconnects)}; ${JSON.stringify(c.socket.refusals)}`,
      );
    }
  };
  await Promise.all(state.map(back));
  // Traffic goes on: five more acks each and ten more ticks, then stop.
  const ackedAtReturn = state.map((c) => c.acked.length);
  const ticksAtReturn = ticks;
  await reached(() => state.every((c, i) => c.acked.length >= ackedAtReturn[i] + 5) && ticks >= ticksAtReturn + 10);
  stopping = true;
  await Promise.all(loops);
  await ticking;
  await Promise.all(
    state.map((c) =>
      c.ticks.until(ticks, lossy ? 2000 : T).catch((err) => {
        if (!lossy) throw err;
      }),
    ),
  );

  // A new client through the proxy is served too.
  const fresh = await open("new");
  const freshBack = await fresh.timeout(T).emitWithAck("ack", { c: "new", k: 0 });
  const freshTransport = fresh.io.engine.transport.name;
  const freshId = fresh.id;
  const freshEnd = await kicked(fresh);

  const result = {
    ticks,
    clients: state.map((c) => {
      const expected = range(0, ticks);
      const got = [...c.ticks];
      return {
        id: c.id,
        sameId: c.socket.id === c.id,
        recovered: c.socket.recovered,
        connected: c.socket.connected,
        connects: c.connects,
        disconnects: [...c.disconnects],
        ticksInOrder: got.length === expected.length && got.every((t, k) => t === k),
        ticksMissing: expected.filter((t) => !got.includes(t)),
        ticksExtra: got.length - new Set(got).size,
        acked: c.acked.length,
        acksInOrder: c.acked.every((k, n) => n === 0 || (typeof k === "number" && k > c.acked[n - 1])),
        failed: [...c.failed],
        refusals: [...c.socket.refusals],
      };
    }),
    fresh: { id: freshId, ack: freshBack, transport: freshTransport, end: freshEnd },
    broadcaster: broadcaster.id,
  };
  for (const c of state) c.socket.io.reconnection(false);
  const ends = await Promise.all([...state.map((c) => kicked(c.socket)), kicked(broadcaster)]);
  result.clients.forEach((client, i) => {
    client.end = ends[i];
  });
  result.broadcasterEnd = ends[state.length];
  return result;
}

main(mode === "kill" ? kill : traffic, 110000);
