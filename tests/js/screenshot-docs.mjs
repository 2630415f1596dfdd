// Screenshots of the admin API's /docs page in headless Chromium, on a
// desktop (1280x800) and a phone (390x844), for a look by eye:
// `node screenshot-docs.mjs --admin=http://127.0.0.1:8081 --out=/tmp/docs`
// writes /tmp/docs-1280.png and /tmp/docs-390.png. Prints what the page's
// examples name as the API's address.
import { main, args } from "./lib.mjs";
import { launch } from "./browser.mjs";

main(async () => {
  const browser = await launch();
  try {
    const shots = [];
    for (const [width, height] of [[1280, 800], [390, 844]]) {
      const page = await browser.newPage({ viewport: { width, height } });
      await page.goto(`${args.admin}/docs`);
      const path = `${args.out}-${width}.png`;
      await page.screenshot({ path, fullPage: true });
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      shots.push({ path, overflow });
      await page.close();
    }
    return { shots };
  } finally {
    await browser.close();
  }
});
