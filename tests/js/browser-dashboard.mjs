// The dashboard in headless Chromium: the operator pastes the API key, the
// page shows the live cluster (the io-node ids given in --expect), and its
// form publishes to a room. Saves a screenshot (--screenshot) for the record.
import { statSync } from "node:fs";
import { main, args } from "./lib.mjs";
import { launch, until } from "./browser.mjs";

main(async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(args.admin);
    // Without a key the page holds no data.
    const before = await page.textContent("#nodes tbody");
    await page.fill("#key", args.key);
    await page.click("#keyform button");
    const expected = args.expect.split(",");
    await until(page, (ids) => {
      const text = document.querySelector("#nodes tbody").textContent;
      return ids.every((id) => text.includes(id)) && document.querySelector("#connections").textContent !== "–";
    }, expected);
    // Rates need two polls.
    await until(page, () => /^\d+$/.test(document.querySelector("#eventrate").textContent));
    const connections = Number(await page.textContent("#connections"));
    const rooms = await page.textContent("#rooms tbody");
    await page.selectOption("#publish select[name=kind]", "rooms");
    await page.fill("#publish input[name=target]", args.room);
    await page.fill("#publish input[name=event]", "breaking");
    await page.fill("#publish textarea[name=args]", '["from the dashboard"]');
    await page.click("#publish button");
    const published = await until(page, () => {
      const text = document.querySelector("#published").textContent;
      return text.startsWith("published") ? text : null;
    });
    await page.screenshot({ path: args.screenshot, fullPage: true });
    const key = await page.evaluate(() => document.documentElement.outerHTML.includes(sessionStorage.getItem("iocluster-api-key")));
    return {
      emptyBeforeKey: before.trim() === "",
      connections,
      roomListed: rooms.includes(args.room),
      published,
      keyInPage: key,
      screenshotBytes: statSync(args.screenshot).size,
    };
  } finally {
    await browser.close();
  }
}, 60000);
