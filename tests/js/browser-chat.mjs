// The demo chat page (frontend/static/index.html + examples/chat) in headless
// Chromium: ann on a desktop-sized page, bob on a phone-sized one.
//
// Checks: before Join only the login form shows, after it only the room;
// a double Join opens one connection; both see each other in the member
// list, messages with timestamps, the typing indicator; user text stays
// text; at 390 px the Join button, message input and Send button are inside
// the viewport; nothing fails (console errors, page errors, failed requests,
// HTTP errors, favicon included). Then ann's io-node is killed
// (--pids=id:pid,...) while her /config.json requests are held, so the page
// sits in "reconnecting"; released, it reconnects to another io-node and
// says so; bob leaves. Screenshots of login, typing, room, reconnecting and reconnected at
// 1280x800 and 390x844 go to --shots=DIR.
import { mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { main, args } from "./lib.mjs";
import { launch, until } from "./browser.mjs";

const pids = Object.fromEntries(args.pids.split(",").map((pair) => pair.split(":")));
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

main(async () => {
  mkdirSync(args.shots, { recursive: true });
  const browser = await launch();
  const problems = [];
  let watching = true;
  const shots = {};

  /** A page of its own context, watched for anything failing. */
  async function open(who, viewport) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    page.on("console", (m) => watching && m.type() === "error" && problems.push(`${who} console: ${m.text()}`));
    page.on("pageerror", (e) => watching && problems.push(`${who} page error: ${e.message}`));
    page.on("requestfailed", (r) => watching && problems.push(`${who} failed: ${r.url()} ${r.failure()?.errorText}`));
    page.on("response", (r) => watching && r.status() >= 400 && problems.push(`${who} HTTP ${r.status()}: ${r.url()}`));
    page.icons = [];
    page.on("response", (r) => {
      const path = new URL(r.url()).pathname;
      if (path.startsWith("/favicon")) page.icons.push(`${path} ${r.status()} ${r.headers()["content-type"]}`);
    });
    // Engine.IO handshakes: the first request of a connection has no sid.
    page.handshakes = [];
    page.configReads = 0;
    page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.pathname.startsWith("/socket.io/") && !url.searchParams.get("sid")) page.handshakes.push(r.url());
      if (url.pathname === "/config.json") page.configReads += 1;
    });
    page.on("websocket", (ws) => {
      if (!new URL(ws.url()).searchParams.get("sid")) page.handshakes.push(ws.url());
    });
    page.viewport = viewport;
    await page.goto(args.frontend);
    return page;
  }

  /** Screenshots `page` at both sizes, back at its own size after. */
  async function shoot(page, name) {
    for (const size of [DESKTOP, PHONE]) {
      await page.setViewportSize(size);
      const file = join(args.shots, `chat-${name}-${size.width}.png`);
      await page.screenshot({ path: file });
      shots[`${name}-${size.width}`] = statSync(file).size;
    }
    await page.setViewportSize(page.viewport);
  }

  const visible = (page, selector) => page.locator(selector).isVisible();

  /** Whether the element's box lies inside the page's viewport. */
  async function inside(page, selector) {
    const box = await page.locator(selector).boundingBox();
    const { width, height } = page.viewportSize();
    return !!box && box.x >= 0 && box.y >= 0 && box.x + box.width <= width && box.y + box.height <= height;
  }

  const members = (page) => page.evaluate(() => [...document.querySelectorAll("#member-list .name")].map((n) => n.textContent));

  try {
    const ann = await open("ann", DESKTOP);
    const bob = await open("bob", PHONE);

    // Before Join: the form only.
    const before = {
      login: await visible(ann, "#login-form"),
      room: await visible(ann, "#room"),
      log: await visible(ann, "#log"),
      input: await visible(ann, "#send input[name=text]"),
    };
    const phoneJoinInside = await inside(bob, "#join");
    await shoot(ann, "login");

    // ann double-clicks Join; bob submits twice from script (the button is
    // already disabled for a second click, the page must ignore a second
    // submit too).
    await ann.fill("#login input[name=nickname]", "ann");
    await ann.fill("#login input[name=room]", "lobby");
    await ann.dblclick("#join");
    await bob.fill("#login input[name=nickname]", "bob <b>");
    await bob.fill("#login input[name=room]", "lobby");
    await bob.evaluate(() => {
      const form = document.getElementById("login-form");
      form.requestSubmit();
      form.requestSubmit();
    });
    for (const page of [ann, bob]) await until(page, () => window.chatState.view === "room" && window.chatState.state === "connected");

    const after = {
      login: await visible(ann, "#login"),
      room: await visible(ann, "#room"),
      log: await visible(ann, "#log"),
      input: await visible(ann, "#send input[name=text]"),
    };

    // Each sees both in the member list (ann's list and bob's).
    for (const page of [ann, bob]) {
      await until(page, () => JSON.stringify(window.chatState.members) === JSON.stringify(["ann", "bob <b>"]));
    }
    const listed = { ann: await members(ann), bob: await members(bob) };

    // Typing: bob types, ann sees it; it goes away once bob stops.
    await bob.locator("#send input[name=text]").pressSequentially("hello ann", { delay: 30 });
    const typingShown = await until(ann, () => {
      const text = document.getElementById("typing").textContent;
      return text.includes("bob <b> is typing") && text;
    });
    await shoot(ann, "typing");
    await until(ann, () => document.getElementById("typing").textContent === "", undefined, 15000);

    // Messages both ways, with timestamps; user text stays text.
    await bob.press("#send input[name=text]", "Enter");
    const hostile = '<img src=x onerror="window.pwned=1">';
    await ann.fill("#send input[name=text]", hostile);
    await ann.click("#send button");
    for (const page of [ann, bob]) {
      await until(page, (text) => window.chatState.messages.some((m) => m.text === text), hostile);
      await until(page, () => window.chatState.messages.some((m) => m.text === "hello ann"));
    }
    const rendered = async (page) =>
      page.evaluate(() => ({
        messages: [...document.querySelectorAll("#log .msg")].map((m) => ({
          who: m.querySelector(".who").textContent,
          text: m.querySelector(".text").textContent,
          time: m.querySelector("time").textContent,
          datetime: m.querySelector("time").dateTime,
          mine: m.classList.contains("mine"),
        })),
        images: document.querySelectorAll("#log img, #member-list img, #member-list b").length,
        pwned: window.pwned === 1,
      }));
    const seen = { ann: await rendered(ann), bob: await rendered(bob) };

    // At 390 px the message input and Send button are on screen.
    const phone = {
      join: phoneJoinInside,
      input: await inside(bob, "#send input[name=text]"),
      send: await inside(bob, "#send button"),
      status: await inside(bob, "#status"),
      leave: await inside(bob, "#leave"),
      overflowX: await bob.evaluate(() => document.documentElement.scrollWidth > window.innerWidth),
    };
    await shoot(ann, "room");
    await shoot(bob, "room-bob");

    const connections = {
      ann: { handshakes: ann.handshakes.length, configReads: ann.configReads, connections: await ann.evaluate(() => window.chatState.connections) },
      bob: { handshakes: bob.handshakes.length, configReads: bob.configReads, connections: await bob.evaluate(() => window.chatState.connections) },
    };
    const clean = problems.slice();

    // Failover: from here on, requests to the dead io-node fail by design.
    watching = false;
    const first = await ann.evaluate(() => window.chatState.node);
    const held = [];
    let hold = true;
    await ann.route("**/config.json", (route) => (hold ? held.push(route) : route.continue()));
    process.kill(Number(pids[first]), "SIGKILL");
    await until(ann, () => document.getElementById("status").dataset.state === "reconnecting" && window.chatState.state === "connecting", undefined, 20000);
    const reconnecting = {
      status: await ann.locator("#status").textContent(),
      banner: await ann.locator("#banner").textContent(),
      inputUsable: await ann.locator("#send input[name=text]").isEditable(),
      sendDisabled: await ann.locator("#send button").isDisabled(),
    };
    await shoot(ann, "reconnecting");
    hold = false;
    for (const route of held) await route.continue();
    await until(ann, () => document.getElementById("status").dataset.state === "reconnected", undefined, 30000);
    const second = await ann.evaluate(() => window.chatState.node);
    const reconnected = {
      status: await ann.locator("#status").textContent(),
      banner: await ann.locator("#banner").textContent(),
    };
    await until(ann, () => JSON.stringify(window.chatState.members) === JSON.stringify(["ann", "bob <b>"]), undefined, 30000);
    await shoot(ann, "reconnected");
    await ann.fill("#send input[name=text]", "back again");
    await ann.click("#send button");
    await until(bob, () => window.chatState.messages.some((m) => m.text === "back again"), undefined, 30000);

    // bob leaves: his page is back at the form, ann's list loses him.
    await bob.click("#leave");
    const left = { login: await visible(bob, "#login-form"), room: await visible(bob, "#room") };
    await until(ann, () => JSON.stringify(window.chatState.members) === JSON.stringify(["ann"]), undefined, 30000);
    left.annSaw = await ann.locator("#log .info").last().textContent();

    const icons = [...new Set(ann.icons.concat(bob.icons))];
    return { icons, before, after, listed, typingShown, seen, phone, connections, problems: clean, first, second, reconnecting, reconnected, left, shots };
  } finally {
    await browser.close();
  }
}, 110000);
