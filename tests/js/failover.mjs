// --clients stock clients connect to the first URL. When that io-node dies,
// each fails over to another URL (what the frontend's browser helper does)
// and proves the new connection works with an acked event.
import { io } from "socket.io-client";
import { main, urls, args } from "./lib.mjs";

const clients = Number(args.clients || 10);
const [first, ...others] = urls;
const options = { reconnection: false, forceNew: true, transports: ["websocket"], timeout: 10000 };

function client(i) {
  return new Promise((resolve, reject) => {
    const socket = io(first, options);
    let firstSid;
    socket.once("connect", () => {
      firstSid = socket.id;
    });
    socket.once("connect_error", reject);
    socket.once("disconnect", (reason) => {
      const again = io(others[i % others.length], options);
      again.once("connect_error", reject);
      again.once("connect", async () => {
        try {
          const app = await again.timeout(10000).emitWithAck("slow", 0);
          const sid = again.id;
          again.close();
          resolve({ firstSid, reason, sid, app });
        } catch (err) {
          reject(err);
        }
      });
    });
  });
}

main(async () => {
  const results = await Promise.all([...Array(clients).keys()].map(client));
  return {
    failedOver: results.length,
    reasons: [...new Set(results.map((r) => r.reason))],
    firstSids: results.map((r) => r.firstSid),
  };
}, 90000);
