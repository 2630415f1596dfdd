// The Socket.IO reference behaviour (examples/echo), over every transport and
// every io-node given in --urls.
import assert from "node:assert/strict";
import { connect, connectError, main, urls, waitFor, TRANSPORTS } from "./lib.mjs";

main(async () => {
  const checked = [];
  for (const url of urls) {
    for (const [name, transport] of Object.entries(TRANSPORTS)) {
      const auth = { token: "abc", n: 1 };
      const socket = await connect(url, { ...transport, auth });
      // `auth` is emitted by the connection handler, before or right after CONNECT.
      const authEvent = socket.early.find((e) => e[0] === "auth") ?? ["auth", ...(await waitFor(socket, "auth"))];
      assert.deepEqual(authEvent[1], auth);

      socket.emit("message", 1, "two", { three: 3 });
      assert.deepEqual(await waitFor(socket, "message-back"), [1, "two", { three: 3 }]);

      const acked = await socket.timeout(5000).emitWithAck("message-with-ack", 1, "2", [3]);
      assert.equal(acked, 1);
      const all = await new Promise((resolve) => socket.emit("message-with-ack", 1, "2", [3], (...r) => resolve(r)));
      assert.deepEqual(all, [1, "2", [3]]);

      const bytes = Buffer.from([0, 1, 2, 254, 255]);
      socket.emit("message", bytes, { nested: Buffer.from("hi") });
      const [gotBytes, gotNested] = await waitFor(socket, "message-back");
      assert.ok(Buffer.from(gotBytes).equals(bytes));
      assert.equal(Buffer.from(gotNested.nested).toString(), "hi");

      if (name === "upgrade") {
        await new Promise((r) => (socket.io.engine.transport.name === "websocket" ? r() : socket.io.engine.once("upgrade", r)));
        assert.equal(socket.io.engine.transport.name, "websocket");
        socket.emit("message", "after upgrade");
        assert.deepEqual(await waitFor(socket, "message-back"), ["after upgrade"]);
      }

      const custom = await connect(url + "/custom", { ...transport, auth: { custom: true } });
      const customAuth = custom.early.find((e) => e[0] === "auth") ?? ["auth", ...(await waitFor(custom, "auth"))];
      assert.deepEqual(customAuth[1], { custom: true });
      custom.close();

      const refused = await connectError(url + "/random", transport);
      assert.equal(refused.message, "Invalid namespace");
      socket.close();
      checked.push(`${url} ${name}`);
    }
  }
  return { checked };
});
