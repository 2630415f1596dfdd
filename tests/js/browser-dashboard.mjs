// The dashboard in headless Chromium, against a real cluster: two clients
// (stock socket.io-client) in rooms on two io-nodes; the operator pastes
// the API key and goes through every view: the overview publishes to a
// room, the nodes view lists both io-nodes and the app-node, the event
// tail shows a client's event, the sockets view finds both sockets and the
// detail of one (handshake, rooms, data), makes it join a room, sends it an
// event and disconnects it, the rooms view lists a room's members and
// publishes to it, and an io-node killed (--pids=id:pid) shows as lapsed.
// Screenshots of every view at 1280x800 and 390x844 go to --shots.
import { mkdirSync } from "node:fs";
import { main, args, urls, connect, collect, sleep } from "./lib.mjs";
import { launch, until } from "./browser.mjs";

const VIEWS = ["overview", "nodes", "sockets", "rooms", "events"];

/** Waits (in Node) until `check()` is truthy; fails after `ms`. */
async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(50);
  }
}

const text = (page, selector) => page.evaluate((s) => document.querySelector(s)?.textContent ?? "", selector);

async function screenshots(page, size, out, result) {
  for (const view of VIEWS) {
    await page.goto(args.admin + "#" + view);
    await until(page, (v) => document.querySelector("#view-" + v).classList.contains("on"), view);
    // One refresh of the view's data.
    await sleep(2100);
    const path = `${out}/${view}-${size}.png`;
    await page.screenshot({ path, fullPage: true });
    result.overflow[`${view}-${size}`] = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  }
}

main(async () => {
  mkdirSync(args.shots, { recursive: true });
  const [killed, pid] = args.pids.split(":");
  const alice = await connect(urls[0], { auth: { rooms: ["news", "lobby"], data: { name: "alice" } } });
  const bob = await connect(urls[1], { auth: { rooms: ["news"] } });
  const breaking = collect(bob, "breaking");
  const roomNews = collect(bob, "roomnews");
  const direct = collect(alice, "direct");
  const aliceGone = new Promise((resolve) => alice.on("disconnect", resolve));
  const result = { overflow: {} };
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on("dialog", (dialog) => dialog.accept());
    await page.goto(args.admin);
    // Without a key the page holds no data.
    result.emptyBeforeKey = (await text(page, "#nsps tbody")).trim() === "" && (await text(page, "#connections")) === "–";
    await page.fill("#key", args.key);
    await page.click("#keyform button");

    // Overview: the two clients, and a publish to their room.
    await until(page, () => document.querySelector("#connections").textContent === "2");
    result.connections = Number(await text(page, "#connections"));
    await until(page, () => document.querySelector("#largest tbody").textContent.includes("news"));
    await page.selectOption("#publish select[name=kind]", "rooms");
    await page.fill("#publish input[name=target]", "news");
    await page.fill("#publish input[name=event]", "breaking");
    await page.fill("#publish textarea[name=args]", '["from the dashboard"]');
    await page.click("#publish button");
    await eventually("the published event", () => breaking.length > 0);
    result.published = breaking[0];

    // Nodes: both io-nodes and the app-node, alive.
    await page.goto(args.admin + "#nodes");
    await until(page, () => {
      const t = document.querySelector("#ionode-table tbody").textContent;
      return t.includes("io0") && t.includes("io1") && (t.match(/alive/g) || []).length === 2
        && document.querySelector("#appnode-table tbody").textContent.includes("alive");
    });
    result.nodesAlive = await text(page, "#ionode-table tbody");

    // Events: a client event shows on the tail.
    await page.goto(args.admin + "#events");
    const emitter = setInterval(() => alice.emit("echo", "tail me"), 300);
    try {
      result.tailRow = await until(page, () => [...document.querySelectorAll("#tail-table tbody tr")]
        .map((tr) => tr.textContent).find((t) => t.includes("client") && t.includes("message") && t.includes("echo")), undefined, 20000);
      // Payloads only when asked.
      result.payloadHidden = !(await text(page, "#tail-table tbody")).includes("tail me");
      await page.check("#tail-filter input[name=payloads]");
      result.payloadShown = await until(page, () => document.querySelector("#tail-table tbody").textContent.includes("tail me"), undefined, 20000);
    } finally {
      clearInterval(emitter);
    }

    // Sockets: both listed; alice's detail; join, send, disconnect.
    await page.goto(args.admin + "#sockets");
    await until(page, (ids) => ids.every((id) => document.querySelector("#socket-table tbody").textContent.includes(id)), [alice.id, bob.id]);
    await page.click(`#socket-table a[href="#sockets/${encodeURIComponent(alice.id)}"]`);
    await until(page, () => document.querySelector("#d-handshake").textContent.includes("EIO=4"));
    result.detail = {
      rooms: await text(page, "#d-rooms"),
      data: await text(page, "#d-data"),
      node: await text(page, "#d-kv"),
    };
    await page.fill("#a-join input[name=room]", "vip");
    await page.click("#a-join button");
    await until(page, () => document.querySelector("#d-rooms").textContent.includes("vip"));
    result.joined = true;
    await page.fill("#a-emit input[name=event]", "direct");
    await page.fill("#a-emit input[name=args]", '["hi alice"]');
    await page.click("#a-emit button");
    await eventually("the event sent to one socket", () => direct.length > 0);
    result.direct = direct[0];
    await page.screenshot({ path: `${args.shots}/socket-detail-desktop.png`, fullPage: true });
    await page.click("#a-disconnect button");
    result.disconnectReason = await Promise.race([aliceGone, sleep(10000).then(() => "no disconnect")]);
    await until(page, () => document.querySelector("#d-state").textContent.includes("gone"));
    result.detailGone = true;

    // Rooms: news with bob; its members; publish to it.
    await page.goto(args.admin + "#rooms");
    await until(page, () => document.querySelector("#room-table tbody").textContent.includes("news"));
    await page.click("#room-table tbody tr:has-text('news')");
    await until(page, (id) => document.querySelector("#member-table tbody").textContent.includes(id), bob.id);
    result.members = await text(page, "#member-table tbody");
    await page.fill("#r-publish input[name=event]", "roomnews");
    await page.click("#r-publish button");
    await eventually("the event published to the room", () => roomNews.length > 0);
    result.roomPublished = roomNews[0];

    // Screenshots of every view, then one io-node killed shows as lapsed.
    await screenshots(page, "desktop", args.shots, result);
    process.kill(Number(pid), "SIGKILL");
    await page.goto(args.admin + "#nodes");
    await until(page, (id) => [...document.querySelectorAll("#ionode-table tbody tr")]
      .some((tr) => tr.textContent.includes(id) && tr.textContent.includes("lapsed")), killed, 20000);
    result.lapsed = killed;
    await page.screenshot({ path: `${args.shots}/nodes-lapsed-desktop.png`, fullPage: true });
    result.keyInPage = await page.evaluate(() => document.documentElement.outerHTML.includes(sessionStorage.getItem("iocluster-api-key")));

    const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await phone.goto(args.admin);
    await phone.fill("#key", args.key);
    await phone.click("#keyform button");
    await screenshots(phone, "phone", args.shots, result);
  } finally {
    alice.close();
    bob.close();
    await browser.close();
  }
  return result;
}, 110000);
