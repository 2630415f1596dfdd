// Pages of two origins, served here on loopback ports, connect to an
// io-node with the stock client in headless Chromium: the allowed origin
// gets in on polling and WebSocket, the other one is refused on both (the
// io-node runs with --websocket-origin-check).
//
//   node browser-cors.mjs --url=http://127.0.0.1:3001 --allowed=PORT --other=PORT
import http from "node:http";
import { readFileSync } from "node:fs";
import { launch } from "./browser.mjs";
import { main, args } from "./lib.mjs";

const client = readFileSync(
  new URL("./node_modules/socket.io-client/dist/socket.io.min.js", import.meta.url),
);

function serve(port) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      if (req.url === "/io.js") {
        res.writeHead(200, { "content-type": "text/javascript" });
        res.end(client);
      } else {
        res.writeHead(200, { "content-type": "text/html" });
        res.end('<!doctype html><title>origin</title><script src="/io.js"></script>');
      }
    });
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function attempt(page, url, transports) {
  return page.evaluate(
    ([url, transports]) =>
      new Promise((resolve) => {
        const socket = io(url, { transports, reconnection: false, timeout: 5000 });
        socket.on("connect", () => {
          socket.close();
          resolve("connected");
        });
        socket.on("connect_error", (err) => {
          socket.close();
          resolve(`refused: ${err.message}`);
        });
      }),
    [url, transports],
  );
}

main(async () => {
  const ports = { allowed: Number(args.allowed), other: Number(args.other) };
  const servers = await Promise.all(Object.values(ports).map(serve));
  const browser = await launch();
  const result = {};
  try {
    for (const [name, port] of Object.entries(ports)) {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${port}/`);
      result[name] = {
        polling: await attempt(page, args.url, ["polling"]),
        websocket: await attempt(page, args.url, ["websocket"]),
      };
      await page.close();
    }
  } finally {
    await browser.close();
    for (const server of servers) server.close();
  }
  return result;
}, 90000);
