// The chat example (examples/chat) across two io-nodes: join, messages to the
// room, typing, user joined / left, member lists, refusal without a nickname.
import assert from "node:assert/strict";
import { collect, connect, connectError, main, sleep, urls, waitFor, TRANSPORTS } from "./lib.mjs";

const [A, B] = urls;

/** Follows a socket's `members` lists (the highest version wins, as on the page). */
function members(socket) {
  const latest = {};
  const waiters = [];
  socket.on("members", (list) => {
    if (latest[list.room] && latest[list.room].version >= list.version) return;
    latest[list.room] = list;
    for (const waiter of waiters.splice(0)) waiter();
  });
  return {
    /** Resolves with the room's list once it names exactly `names`. */
    async until(room, names, ms = 5000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const list = latest[room];
        if (list && JSON.stringify(list.members) === JSON.stringify(names)) return list;
        if (Date.now() > deadline) throw new Error(`members of ${room}: ${JSON.stringify(list)}, not ${names}`);
        await new Promise((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
  };
}

main(async () => {
  assert.equal((await connectError(A)).message, "nickname required");

  const ann = await connect(A, { ...TRANSPORTS.websocket, auth: { nickname: "ann" } });
  const bob = await connect(B, { ...TRANSPORTS.polling, auth: { nickname: "bob" } });
  const cid = await connect(B, { auth: { nickname: "cid" } });
  const annSees = members(ann);

  assert.deepEqual(await ann.timeout(5000).emitWithAck("join", "rust"), { room: "rust", ok: true });
  const joined = waitFor(ann, "user joined");
  assert.deepEqual(await bob.timeout(5000).emitWithAck("join", "rust"), { room: "rust", ok: true });
  assert.deepEqual((await joined)[0], { nickname: "bob", room: "rust" });
  assert.deepEqual(await cid.timeout(5000).emitWithAck("join", "go"), { room: "go", ok: true });
  const both = await annSees.until("rust", ["ann", "bob"]);
  assert.equal(both.total, 2);
  assert.equal(both.complete, true);

  const annGot = collect(ann, "message");
  const bobGot = collect(bob, "message");
  const cidGot = collect(cid, "message");
  assert.deepEqual(await ann.timeout(5000).emitWithAck("message", { room: "rust", text: "hi bob" }), { ok: true });
  assert.deepEqual(await cid.timeout(5000).emitWithAck("message", { room: "rust", text: "not a member" }), { ok: false });
  await sleep(300);
  for (const got of [annGot, bobGot]) {
    assert.equal(got.length, 1);
    assert.equal(got[0][0].text, "hi bob");
    assert.equal(got[0][0].nickname, "ann");
  }
  assert.equal(cidGot.length, 0);

  const typing = waitFor(ann, "typing");
  bob.emit("typing", { room: "rust", typing: true });
  assert.deepEqual((await typing)[0], { room: "rust", nickname: "bob", typing: true });

  const left = waitFor(ann, "user left");
  bob.close();
  assert.deepEqual((await left)[0], { nickname: "bob", room: "rust" });
  const alone = await annSees.until("rust", ["ann"]);
  assert.ok(alone.version > both.version, "a later change has a higher version");
  assert.equal(alone.total, 1);

  ann.close();
  cid.close();
  return { chat: "ok" };
});
