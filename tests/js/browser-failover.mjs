// The chat page in headless Chromium, connected through /iocluster.js. The
// io-node it connected to is killed (--pids=id:pid,...); the page must fail
// over to another live io-node by itself, rejoin its room and chat.
import { main, args } from "./lib.mjs";
import { launch, until } from "./browser.mjs";

const pids = Object.fromEntries(args.pids.split(",").map((pair) => pair.split(":")));

main(async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on("pageerror", (error) => console.error("page error:", error.message));
    await page.goto(args.frontend);
    await page.fill("#login input[name=nickname]", "ann");
    await page.fill("#login input[name=room]", "lobby");
    await page.click("#login button");
    const first = await until(page, () => window.chatState.state === "connected" && window.chatState.node);
    await page.fill("#send input[name=text]", "before");
    await page.click("#send button");
    await until(page, () => window.chatState.messages.some((m) => m.text === "before"));
    process.kill(Number(pids[first]), "SIGKILL");
    const second = await until(
      page,
      (dead) => window.chatState.state === "connected" && window.chatState.node !== dead && window.chatState.node,
      first,
      20000,
    );
    // Rejoined its room on the new node: chat works again.
    await until(page, () => document.querySelector("#log").textContent.includes("joined #lobby via " + window.chatState.node));
    await page.fill("#send input[name=text]", "after");
    await page.click("#send button");
    await until(page, () => window.chatState.messages.some((m) => m.text === "after"));
    return { first, second, connections: await page.evaluate(() => window.chatState.connections) };
  } finally {
    await browser.close();
  }
}, 90000);
