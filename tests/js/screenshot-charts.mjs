// Screenshots of the charts in docs/img/ as a README shows them (an <img>
// no wider than the page), at a desktop and a phone width, to look at before
// committing a chart. Not run by the tests.
// Usage: node tests/js/screenshot-charts.mjs [OUT_DIR]   (default /tmp)
import { readdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "./browser.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const out = process.argv[2] || "/tmp";
const charts = readdirSync(join(root, "docs/img")).filter((name) => name.endsWith(".svg"));
const browser = await launch();
for (const [width, height] of [[1280, 800], [390, 844]]) {
  const page = await browser.newPage({ viewport: { width, height } });
  for (const chart of charts) {
    // A page beside the chart, so that the file:// image may load.
    const html = join(out, `${chart}.html`);
    const src = "file://" + join(root, "docs/img", chart);
    writeFileSync(
      html,
      `<!doctype html><meta name="viewport" content="width=device-width">` +
        `<body style="margin:16px;font-family:sans-serif"><h2>Performance</h2>` +
        `<img src="${src}" alt="${chart}" style="max-width:100%"></body>`,
    );
    await page.goto("file://" + html);
    const file = join(out, `${chart.replace(/\.svg$/, "")}-${width}.png`);
    await page.screenshot({ path: file });
    console.log(file);
  }
  await page.close();
}
await browser.close();
