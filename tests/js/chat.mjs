// The chat example (examples/chat) across two io-nodes: join, messages to the
// room, typing, user joined / left, refusal without a nickname.
import assert from "node:assert/strict";
import { collect, connect, connectError, main, sleep, urls, waitFor, TRANSPORTS } from "./lib.mjs";

const [A, B] = urls;

main(async () => {
  assert.equal((await connectError(A)).message, "nickname required");

  const ann = await connect(A, { ...TRANSPORTS.websocket, auth: { nickname: "ann" } });
  const bob = await connect(B, { ...TRANSPORTS.polling, auth: { nickname: "bob" } });
  const cid = await connect(B, { auth: { nickname: "cid" } });

  assert.deepEqual(await ann.timeout(5000).emitWithAck("join", "rust"), { room: "rust", ok: true });
  const joined = waitFor(ann, "user joined");
  assert.deepEqual(await bob.timeout(5000).emitWithAck("join", "rust"), { room: "rust", ok: true });
  assert.deepEqual((await joined)[0], { nickname: "bob", room: "rust" });
  assert.deepEqual(await cid.timeout(5000).emitWithAck("join", "go"), { room: "go", ok: true });

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

  ann.close();
  cid.close();
  return { chat: "ok" };
});
