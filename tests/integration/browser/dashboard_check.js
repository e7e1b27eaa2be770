// Drives wsgate's admin dashboard (GET / on the admin listener) in headless
// Chromium for tests/integration/62_dashboard.py and prints one
// `PASS name` / `FAIL name: why` line per check. Steps that need the test
// to act print `WAIT <what>` and continue when a line arrives on stdin.
//   node dashboard_check.js --admin http://H:P --sessions N --token T --shot FILE [--budget-ms N]
// T is the [admin] token wsgate was started with.
"use strict";

const readline = require("readline");
const { check, launch, main } = require("./checks");

const WAIT_MS = 10000;
const FOLLOW_MS = 5000;   // the page must show new sessions within this

function parse_args(argv) {
  const args = { admin: "", sessions: 20, token: "", shot: "", budgetMs: 90000 };
  for (let i = 2; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${key}`);
    if (key === "--admin") args.admin = value;
    else if (key === "--sessions") args.sessions = Number(value);
    else if (key === "--shot") args.shot = value;
    else if (key === "--token") args.token = value;
    else if (key === "--budget-ms") args.budgetMs = Number(value);
    else throw new Error(`unknown argument ${key}`);
  }
  if (!args.admin) throw new Error("--admin URL is required");
  return args;
}

const input = readline.createInterface({ input: process.stdin });
const lines = [];
let waiting = null;
input.on("line", (line) => {
  if (waiting) {
    const resolve = waiting;
    waiting = null;
    resolve(line);
  } else {
    lines.push(line);
  }
});
// Prints WAIT <what> and returns the test's next stdin line.
function ask(what) {
  console.log(`WAIT ${what}`);
  if (lines.length) return Promise.resolve(lines.shift());
  return new Promise((resolve) => { waiting = resolve; });
}

// {pool/id: {state, sessions}} as the table shows them.
async function table(page) {
  return page.evaluate(() => {
    const out = {};
    for (const tr of document.querySelectorAll("#backends tr.backend")) {
      out[`${tr.dataset.pool}/${tr.dataset.id}`] = {
        state: tr.querySelector(".state").textContent.trim(),
        sessions: Number(tr.querySelector(".sessions").textContent),
      };
    }
    return out;
  });
}

async function run(args) {
  const origin = new URL(args.admin).origin;
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const requests = [];
    const outside = [];
    const errors = [];
    page.on("request", (request) => {
      requests.push(request.url());
      if (new URL(request.url()).origin !== origin) outside.push(request.url());
    });
    // Anything for another origin is refused, so a leak fails loudly too.
    await context.route((url) => url.origin !== origin, (route) => route.abort());
    page.on("pageerror", (error) => errors.push(error.message));
    let expect401 = false;  // while the enable without the token is tried: Chromium logs that 401
    page.on("console", (msg) => {
      if (msg.type() !== "error") return;
      if (expect401 && /status of 401/.test(msg.text())) return;
      errors.push(msg.text());
    });

    if (!await check("dashboard_loads", async () => {
      await page.goto(`${args.admin}/`, { timeout: WAIT_MS, waitUntil: "load" });
      const title = await page.title();
      if (!title.includes("wsgate")) throw new Error(`title "${title}"`);
      await page.waitForFunction(() => document.querySelectorAll("#backends tr.backend").length > 0,
                                 null, { timeout: WAIT_MS });
      return `title "${title}"`;
    })) return;

    const before = await table(page);
    await check("dashboard_shows_backends", async () => {
      const names = Object.keys(before).sort();
      const line = JSON.stringify(before);
      if (!names.length) throw new Error("no back-end row");
      for (const [name, row] of Object.entries(before)) {
        if (row.state !== "up" || row.sessions !== 0) throw new Error(`${name}: ${JSON.stringify(row)}`);
      }
      // The rows are text, not only pixels in a chart.
      const text = await page.textContent("#backends");
      for (const name of names) {
        if (!text.includes(name.split("/")[1])) throw new Error(`${name} not in the table's text`);
      }
      return `${names.join(", ")} (${line})`;
    });

    const pageLoads = await page.evaluate(() => performance.getEntriesByType("navigation").length);
    await ask("sessions");
    const opened = Date.now();
    await check("dashboard_follows_sessions", async () => {
      try {
        await page.waitForFunction((n) => {
          let total = 0;
          for (const cell of document.querySelectorAll("#backends tr.backend .sessions")) total += Number(cell.textContent);
          return total === n && document.getElementById("t-connections").textContent === String(n);
        }, args.sessions, { timeout: FOLLOW_MS, polling: 100 });
      } catch {
        throw new Error(`not ${args.sessions} sessions within ${FOLLOW_MS} ms: ${JSON.stringify(await table(page))}`);
      }
      const reloaded = await page.evaluate(() => performance.getEntriesByType("navigation").length);
      if (reloaded !== pageLoads) throw new Error("the page was reloaded");
      return `${args.sessions} sessions shown after ${Date.now() - opened} ms, no reload`;
    });

    const target = await ask("drain");   // "pool/id" drained through the API
    await check("dashboard_shows_draining", async () => {
      try {
        await page.waitForFunction((key) => {
          for (const tr of document.querySelectorAll("#backends tr.backend")) {
            if (`${tr.dataset.pool}/${tr.dataset.id}` === key) return tr.querySelector(".state").textContent.trim() === "draining";
          }
          return false;
        }, target, { timeout: FOLLOW_MS, polling: 100 });
      } catch {
        throw new Error(`${target} not shown draining within ${FOLLOW_MS} ms: ${JSON.stringify(await table(page))}`);
      }
      // Let the charts gather a few points, then keep a picture.
      await page.waitForTimeout(1500);
      if (args.shot) await page.screenshot({ path: args.shot, fullPage: true, timeout: WAIT_MS });
      return `${target} draining${args.shot ? `; screenshot ${args.shot}` : ""}`;
    });

    await check("dashboard_enable_button", async () => {
      const [pool, id] = target.split("/");
      const button = `#backends tr.backend[data-pool="${pool}"][data-id="${id}"] button.enable`;
      // Without the token: wsgate's 401 is shown and nothing changes.
      expect401 = true;
      await page.click(button, { timeout: WAIT_MS });
      try {
        await page.waitForFunction(() => /401/.test(document.getElementById("action").textContent), null,
                                   { timeout: FOLLOW_MS, polling: 100 });
      } catch {
        throw new Error(`no 401 shown for enable without the token: "${await page.textContent("#action")}"`);
      }
      expect401 = false;
      if ((await table(page))[target].state !== "draining") throw new Error(`${target} changed without the token`);
      await page.fill("#token", args.token, { timeout: WAIT_MS });
      await page.click(button, { timeout: WAIT_MS });
      await page.waitForFunction((key) => {
        for (const tr of document.querySelectorAll("#backends tr.backend")) {
          if (`${tr.dataset.pool}/${tr.dataset.id}` === key) return tr.querySelector(".state").textContent.trim() === "up";
        }
        return false;
      }, target, { timeout: FOLLOW_MS, polling: 100 });
      return `401 without the token, then ${target} up with it; note: ${(await page.textContent("#action")).trim()}`;
    });
    await ask("enabled");

    await check("dashboard_no_outside_request", async () => {
      if (outside.length) throw new Error(`requests to other origins: ${outside.slice(0, 5).join(", ")}`);
      const paths = new Set(requests.map((u) => new URL(u).pathname));
      return `${requests.length} requests, all to ${origin} (${[...paths].sort().join(" ")})`;
    });
    await check("dashboard_no_page_errors", async () => {
      if (errors.length) throw new Error(errors.slice(0, 3).join("; "));
    });
  } finally {
    await browser.close();
  }
}

main("dashboard", parse_args, run, () => input.close());
