// Screenshots of every dashboard view at desktop (1280x800) and phone
// (390x844) sizes, for looking at by hand:
//   node dashboard-screenshots.mjs --admin=http://127.0.0.1:8081/ --key=KEY --out=/tmp/shots
// Prints the files written and, per view and size, whether the page is
// wider than the screen (it should never be: wide tables scroll inside
// their card).
import { mkdirSync } from "node:fs";
import { main, args, sleep } from "./lib.mjs";
import { launch } from "./browser.mjs";

const VIEWS = (args.views || "overview,nodes,sockets,rooms,events").split(",");
const SIZES = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };

main(async () => {
  mkdirSync(args.out, { recursive: true });
  const browser = await launch();
  const shots = [];
  try {
    for (const [size, viewport] of Object.entries(SIZES)) {
      const page = await browser.newPage({ viewport });
      await page.goto(args.admin);
      await page.fill("#key", args.key);
      await page.click("#keyform button");
      for (const view of VIEWS) {
        await page.goto(args.admin + "#" + view);
        // Two refreshes: the history, then the view's own data.
        await sleep(Number(args.wait || 2500));
        const path = `${args.out}/${view}-${size}.png`;
        await page.screenshot({ path, fullPage: true });
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        shots.push({ path, overflow });
      }
      await page.close();
    }
  } finally {
    await browser.close();
  }
  return { shots };
}, 120000);
