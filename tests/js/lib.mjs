// Helpers for the scenarios the Rust cluster tests run with the official
// socket.io-client. A scenario prints one JSON line last and exits 0, or
// prints the failure and exits 1.
import readline from "node:readline";
import { io } from "socket.io-client";

export const args = Object.fromEntries(
  process.argv.slice(2).map((arg) => {
    const [key, ...rest] = arg.replace(/^--/, "").split("=");
    return [key, rest.join("=")];
  }),
);

export const urls = (args.urls || "").split(",").filter(Boolean);

/** Connects and resolves once CONNECT arrives; rejects with the connect_error. */
export function connect(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { reconnection: false, forceNew: true, timeout: 10000, ...opts });
    const early = [];
    // Events that arrive with or right after CONNECT are kept for later checks.
    socket.onAny((event, ...rest) => early.push([event, ...rest]));
    socket.early = early;
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** Resolves with the arguments of the next `event`, or rejects after `ms`. */
export function waitFor(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${ms} ms`)), ms);
    socket.once(event, (...rest) => {
      clearTimeout(timer);
      resolve(rest);
    });
  });
}

/** Resolves with the connect_error a connection attempt gets. */
export async function connectError(url, opts = {}) {
  try {
    const socket = await connect(url, opts);
    socket.close();
  } catch (err) {
    return err;
  }
  throw new Error(`connecting to ${url} should have failed`);
}

/** Collects every `event` a socket receives. */
export function collect(socket, event) {
  const got = [];
  socket.on(event, (...rest) => got.push(rest));
  return got;
}

/** Collects every `event`'s first argument; `until(n, ms)` resolves once
 * there are at least `n` (and rejects after `ms`). */
export function recorder(socket, event) {
  const got = [];
  const waiters = [];
  socket.on(event, (value) => {
    got.push(value);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (got.length >= waiters[i].n) waiters.splice(i, 1)[0].resolve();
    }
  });
  got.until = (n, ms = 10000) =>
    new Promise((resolve, reject) => {
      if (got.length >= n) return resolve(got);
      const timer = setTimeout(() => reject(new Error(`${got.length} of ${n} "${event}" events within ${ms} ms`)), ms);
      waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve(got);
        },
      });
    });
  return got;
}

/** The JSON lines the test writes on standard input, one per call
 * (`LiveScenario::send` in tests/src/lib.rs). */
export function inputLines() {
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error("standard input closed");
    return JSON.parse(value);
  };
}

/** Prints `value` as one JSON line (for `LiveScenario::next_json`). */
export const tell = (value) => console.log(JSON.stringify(value));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: { transports: ["polling", "websocket"] },
};

/** Runs `fn`, prints its result as JSON, and exits; a global timeout fails it. */
export function main(fn, timeoutMs = 60000) {
  const timer = setTimeout(() => {
    console.error(`scenario timed out after ${timeoutMs} ms`);
    process.exit(1);
  }, timeoutMs);
  fn().then(
    (result) => {
      clearTimeout(timer);
      console.log(JSON.stringify(result ?? {}));
      process.exit(0);
    },
    (err) => {
      clearTimeout(timer);
      console.error(err && err.stack ? err.stack : err);
      process.exit(1);
    },
  );
}
