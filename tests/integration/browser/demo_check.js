// Drives the wsgate demo page (scripts/demo-web/) in headless Chromium and
// prints one `PASS name` / `FAIL name: why` line per check (the integration
// test protocol); exits 1 if any check failed.
//   node demo_check.js --page URL [--shots DIR] [--budget-ms N]
// URL is the page with its gateway in the query (http://H:P/?ws=H:P). Two
// tabs join as the same user and one as another; every wait is bounded and a
// watchdog ends the run after --budget-ms (default 90 s).
"use strict";

const path = require("path");
const { check, launch, main } = require("./checks");

const WAIT_MS = 10000;
const QUIET_MS = 1500;  // how long a message that must NOT arrive is waited for

function parse_args(argv) {
  const args = { page: "", shots: "", budgetMs: 90000 };
  for (let i = 2; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`missing value for ${key}`);
    if (key === "--page") args.page = value;
    else if (key === "--shots") args.shots = value;
    else if (key === "--budget-ms") args.budgetMs = Number(value);
    else throw new Error(`unknown argument ${key}`);
  }
  if (!args.page) throw new Error("--page URL is required");
  return args;
}

// A tab of the demo page, connected as <user>.
class ChatTab {
  constructor(page, label) {
    this.page = page;
    this.label = label;
    this.errors = [];
    page.on("pageerror", (error) => this.errors.push(error.message));
    page.on("console", (msg) => {
      if (msg.type() === "error") this.errors.push(msg.text());
    });
  }

  async open(url) {
    await this.page.goto(url, { timeout: WAIT_MS, waitUntil: "load" });
    const title = await this.page.title();
    if (!title.includes("wsgate")) throw new Error(`${this.label}: unexpected title "${title}"`);
  }

  async connect(user) {
    await this.page.fill("#user", user, { timeout: WAIT_MS });
    await this.page.click("#connect", { timeout: WAIT_MS });
    try {
      await this.page.waitForFunction(
        () => document.getElementById("state").classList.contains("open") &&
              document.getElementById("backend").textContent.trim() !== "\u2014",
        null, { timeout: WAIT_MS });
    } catch {
      throw new Error(`${this.label}: not connected within ${WAIT_MS} ms; log: ${await this.log_text()}`);
    }
    return this.backend();
  }

  async backend() {
    return (await this.page.textContent("#backend")).trim();
  }

  async log_text() {
    return (await this.page.textContent("#log")).replace(/\s+/g, " ").trim();
  }

  async send(text) {
    await this.page.fill("#text", text, { timeout: WAIT_MS });
    await this.page.click("#send", { timeout: WAIT_MS });
  }

  // The first chat line whose text is <text>, as {user, backend}, waited for
  // up to <ms>; null if none came.
  async wait_chat(text, ms = WAIT_MS) {
    try {
      const handle = await this.page.waitForFunction((wanted) => {
        for (const item of document.querySelectorAll("#log li.chat")) {
          if (item.querySelector(".text").textContent === wanted) {
            return { user: item.dataset.user, backend: item.dataset.backend };
          }
        }
        return null;
      }, text, { timeout: ms });
      return await handle.jsonValue();
    } catch (error) {
      if (error.name === "TimeoutError") return null;
      throw error;
    }
  }

  async disconnect() {
    await this.page.click("#connect", { timeout: WAIT_MS });
    await this.page.waitForFunction(
      () => document.getElementById("state").classList.contains("closed"),
      null, { timeout: WAIT_MS });
    return this.log_text();
  }
}

async function run(args) {
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const tabs = [
      new ChatTab(await context.newPage(), "tab 1 (alice)"),
      new ChatTab(await context.newPage(), "tab 2 (alice)"),
      new ChatTab(await context.newPage(), "tab 3 (bob)"),
    ];
    const users = ["alice", "alice", "bob"];

    if (!await check("browser_page_loads", async () => {
      for (const tab of tabs) await tab.open(args.page);
    })) return;

    const backends = [];
    if (!await check("browser_connects_through_gateway", async () => {
      for (let i = 0; i < tabs.length; i++) backends.push(await tabs[i].connect(users[i]));
    })) return;

    await check("browser_same_user_same_backend", async () => {
      if (backends[0] !== backends[1]) {
        throw new Error(`alice's tabs are pinned to "${backends[0]}" and "${backends[1]}"`);
      }
    });

    const nonce = Math.random().toString(36).slice(2, 10);
    const fromAlice = `hello from alice ${nonce}`;
    await tabs[0].send(fromAlice);
    await check("browser_ws_roundtrip", async () => {
      const line = await tabs[0].wait_chat(fromAlice);
      if (!line) throw new Error(`own message not echoed within ${WAIT_MS} ms; log: ${await tabs[0].log_text()}`);
      if (line.user !== "alice" || line.backend !== backends[0]) {
        throw new Error(`echoed as user "${line.user}" via "${line.backend}", want alice via "${backends[0]}"`);
      }
    });

    await check("browser_broadcast_same_backend", async () => {
      const line = await tabs[1].wait_chat(fromAlice);
      if (!line) throw new Error(`tab 2 did not get tab 1's message within ${WAIT_MS} ms`);
    });

    const fromBob = `hello from bob ${nonce}`;
    await tabs[2].send(fromBob);
    await check("browser_other_user_roundtrip", async () => {
      const line = await tabs[2].wait_chat(fromBob);
      if (!line) throw new Error(`own message not echoed within ${WAIT_MS} ms; log: ${await tabs[2].log_text()}`);
      if (line.user !== "bob" || line.backend !== backends[2]) {
        throw new Error(`echoed as user "${line.user}" via "${line.backend}", want bob via "${backends[2]}"`);
      }
    });

    // Broadcast stays inside one back end: alice sees bob's line exactly
    // when both are pinned to the same back end.
    await check("browser_broadcast_scoped_to_backend", async () => {
      const shared = backends[2] === backends[0];
      const line = await tabs[0].wait_chat(fromBob, shared ? WAIT_MS : QUIET_MS);
      if (shared && !line) throw new Error(`same back end "${backends[0]}" but alice did not get bob's line`);
      if (!shared && line) throw new Error(`alice ("${backends[0]}") got a line from bob ("${backends[2]}")`);
    });

    if (args.shots) {
      for (let i = 0; i < tabs.length; i++) {
        await tabs[i].page.screenshot({ path: path.join(args.shots, `tab${i + 1}.png`), timeout: WAIT_MS });
      }
    }

    await check("browser_clean_close", async () => {
      const log = await tabs[0].disconnect();
      if (!/closed \(code 1000 bye\)/.test(log)) throw new Error(`no clean 1000 close in the log: ${log}`);
    });

    await check("browser_no_page_errors", async () => {
      const errors = tabs.flatMap((tab) => tab.errors.map((e) => `${tab.label}: ${e}`));
      if (errors.length) throw new Error(errors.join("; "));
    });
  } finally {
    await browser.close();
  }
}

main("browser_demo", parse_args, run);
