// Headless Chromium (Debian's package, driven by playwright-core) for the
// browser tests. CHROMIUM overrides the binary path.
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

export async function launch() {
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: run scripts/test.sh (installs Debian's chromium)`);
  }
  return chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
}

/** Polls `fn` in the page until it returns a truthy value. */
export async function until(page, fn, arg, ms = 15000) {
  const handle = await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  return handle.jsonValue();
}
