// Headless Chromium loads the demo page over https from wsgate itself (an
// HTTP/2 origin that sends SETTINGS_ENABLE_CONNECT_PROTOCOL) and joins the
// chat; prints `PASS name` / `FAIL name: why` lines and, while the socket is
// open, `OPEN` then waits for a line on stdin before closing (so that the
// driver, tests/integration/61_browser_h2.py, can count the browser's TCP
// connections and read the access log meanwhile).
//   node h2_check.js --page URL
"use strict";

const readline = require("readline");
const { chromium } = require("playwright-core");

const WAIT_MS = 15000;

async function main() {
  const page_url = process.argv[process.argv.indexOf("--page") + 1];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--ignore-certificate-errors"],
  });
  let failed = false;
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(page_url, { timeout: WAIT_MS, waitUntil: "load" });
    await page.fill("#user", "h2user", { timeout: WAIT_MS });
    await page.click("#connect", { timeout: WAIT_MS });
    await page.waitForFunction(
      () => document.getElementById("state").classList.contains("open") &&
            document.getElementById("backend").textContent.trim() !== "\u2014",
      null, { timeout: WAIT_MS });
    console.log("PASS browser_websocket_open");
    await page.fill("#text", "over h2?", { timeout: WAIT_MS });
    await page.click("#send", { timeout: WAIT_MS });
    await page.waitForFunction(() => [...document.querySelectorAll("#log li.chat .text")]
      .some((e) => e.textContent === "over h2?"), null, { timeout: WAIT_MS });
    console.log("PASS browser_chat_echo");
    console.log("OPEN");
    const rl = readline.createInterface({ input: process.stdin });
    await new Promise((resolve) => rl.once("line", resolve));
    rl.close();
  } catch (error) {
    failed = true;
    console.log(`FAIL browser_h2: ${String(error.message || error).split("\n")[0]}`);
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}

main();
