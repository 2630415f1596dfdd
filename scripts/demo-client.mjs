// The demo's scripted chat: ann on one io-node, bob on the other, in room
// "demo". Uses the socket.io-client installed in tests/js.
import { createRequire } from "node:module";
const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const [urlA, urlB] = process.argv.slice(2);
const open = (url, nickname) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { auth: { nickname }, reconnection: false });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
const show = (who) => (m) => console.log(`  [${who} sees] ${m.nickname}: ${m.text}`);

const ann = await open(urlA, "ann");
const bob = await open(urlB, "bob");
console.log(`  ann connected to ${urlA} as ${ann.id}`);
console.log(`  bob connected to ${urlB} as ${bob.id}`);
ann.on("message", show("ann"));
bob.on("message", show("bob"));
bob.on("user joined", (u) => console.log(`  [bob sees] ${u.nickname} joined #${u.room}`));
await bob.emitWithAck("join", "demo");
await ann.emitWithAck("join", "demo");
await ann.emitWithAck("message", { room: "demo", text: "hello from io-node 1" });
await bob.emitWithAck("message", { room: "demo", text: "hi ann, this is io-node 2" });
await new Promise((r) => setTimeout(r, 300));
ann.close();
bob.close();
