// What the headless-Chromium checks share (demo_check.js, dashboard_check.js):
// the browser's launch flags, the `PASS name` / `FAIL name: why` protocol,
// and a main() bounded by a watchdog.
"use strict";

const { chromium } = require("playwright-core");

let failures = 0;

function pass(name, detail) {
  console.log(`PASS ${name}${detail ? `: ${detail}` : ""}`);
}

function fail(name, why) {
  failures += 1;
  console.log(`FAIL ${name}: ${String(why).split("\n")[0]}`);
}

// Runs <body>; a throw becomes the FAIL reason, a returned string the PASS
// detail. Returns whether it passed.
async function check(name, body) {
  try {
    pass(name, await body());
    return true;
  } catch (error) {
    fail(name, error.message || error);
    return false;
  }
}

// Headless Chromium without anything that talks to the network on its own.
function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// Parses the arguments with <parse_args>, runs <run>(args) under a watchdog
// of args.budgetMs and exits 1 if any check failed (<name> reports a setup
// failure, a throw or the watchdog).
function main(name, parse_args, run, cleanup = () => {}) {
  (async () => {
    let args;
    try {
      args = parse_args(process.argv);
    } catch (error) {
      fail(name, error.message);
      return 1;
    }
    const watchdog = setTimeout(() => {
      fail(name, `gave up after ${args.budgetMs} ms`);
      process.exit(1);
    }, args.budgetMs);
    try {
      await run(args);
    } catch (error) {
      fail(name, error.message || error);
    } finally {
      clearTimeout(watchdog);
      cleanup();
    }
    return failures ? 1 : 0;
  })().then((code) => process.exit(code));
}

module.exports = { check, fail, launch, main };
