// Connects to --url (with optional --nsp) and expects connect_error --expect.
import assert from "node:assert/strict";
import { args, connectError, main } from "./lib.mjs";

main(async () => {
  const started = Date.now();
  const err = await connectError(args.url + (args.nsp || ""), { transports: ["websocket"] });
  assert.equal(err.message, args.expect);
  return { message: err.message, ms: Date.now() - started };
});
