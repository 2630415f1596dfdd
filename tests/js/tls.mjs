// Connects over TLS (https/wss) with the given CA, on polling with the
// upgrade and on WebSocket only, and does an acked round trip on each.
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { connect, main, urls, args, TRANSPORTS } from "./lib.mjs";

const ca = readFileSync(args.ca);

main(async () => {
  const results = {};
  for (const [name, transports] of Object.entries(TRANSPORTS)) {
    const socket = await connect(urls[0], { ...transports, ca });
    if (name === "upgrade" && socket.io.engine.transport.name !== "websocket") {
      await new Promise((resolve) => socket.io.engine.once("upgrade", resolve));
    }
    const answer = await socket.timeout(5000).emitWithAck("slow", 0);
    assert.match(answer, /^app/);
    results[name] = socket.io.engine.transport.name;
    socket.close();
  }
  return results;
});
