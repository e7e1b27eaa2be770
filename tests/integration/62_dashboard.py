"""The admin dashboard (GET / on the admin listener: files under
proxy/runtime/dashboard/, compiled in by scripts/embed-files) in headless
Chromium, driven by tests/integration/browser/dashboard_check.js
(playwright-core, installed like 60_browser.py does): the page loads with
no request to any other origin (others are also blocked), shows every back
end as a text row, follows 20 sessions opened through wsgate within 5 s
without a reload, shows a back end drained through the API as "draining",
and its enable button is refused (401 shown) until the [admin] token is
typed into the page's token field, then brings it back. A screenshot is
kept as
$WSGATE_BUILD/test-output/dashboard.png."""

import importlib
import os
import select
import subprocess
import sys
import time
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (HOST, Backend, RawWs, Wsgate, admin_request, admin_status,  # noqa: E402
                     check, check_eq, free_port, main, test)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROWSER_DIR = os.path.join(ROOT, "tests", "integration", "browser")
SESSIONS = 20
TOKEN = "dashboard-secret"


class Driver:
    """dashboard_check.js as a child: its PASS/FAIL lines are collected,
    WAIT lines returned to the test, which answers on stdin."""

    def __init__(self, node, argv, deadline):
        self.proc = subprocess.Popen([node, "dashboard_check.js", *argv], cwd=BROWSER_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.deadline = deadline
        self.buffer = b""
        self.passed, self.failed, self.output = [], [], []

    def next_wait(self):
        """Reads lines until `WAIT what` (returned) or the end (None)."""
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.output.append(text)
                if text.startswith("WAIT "):
                    return text[5:]
                if text.startswith("PASS "):
                    self.passed.append(text[5:])
                elif text.startswith("FAIL "):
                    self.failed.append(text[5:])
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"dashboard_check.js timed out; output: {self.output[-5:]}")
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk

    def answer(self, text):
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


@test(timeout=200)
def dashboard_in_chromium():
    """See the module docstring; every check of dashboard_check.js must pass."""
    browser_test = importlib.import_module("60_browser")
    deadline = time.monotonic() + 180
    node = browser_test.ensure_browser_tools(deadline)
    out_dir = os.path.join(ROOT, os.environ.get("WSGATE_BUILD", "build"), "test-output")
    os.makedirs(out_dir, exist_ok=True)
    shot = os.path.join(out_dir, "dashboard.png")
    if os.path.exists(shot):
        os.unlink(shot)
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()
        gw = Wsgate({
            "admin": f"{HOST}:{admin_port}", "server": {"drain_timeout": "60s"},
            "pools": [{"name": "main", "hash": "query:key",
                       "backends": [{"backend": b, "id": b.id} for b in (b1, b2, b3)]}]})
        gw.config_text = gw.config_text.replace("[admin]\n", f'[admin]\ntoken = "{TOKEN}"\n', 1)
        stack.enter_context(gw)
        driver = Driver(node, ["--admin", f"http://{HOST}:{admin_port}", "--sessions", str(SESSIONS), "--token", TOKEN,
                               "--shot", shot, "--budget-ms", str(int((deadline - time.monotonic()) * 1000) - 5000)],
                        deadline)
        stack.callback(driver.stop)
        sessions = []
        stack.callback(lambda: [ws.abort() for ws in sessions])
        target = None
        while (step := driver.next_wait()) is not None:
            if step == "sessions":
                for i in range(SESSIONS):
                    ws = RawWs.connect(gw.port, f"/?key=k{i}")
                    sessions.append(ws)
                    ws.send_text("ping")
                    check(ws.recv_message(timeout=5) is not None, f"session {i}: no echo")
                driver.answer("opened")
            elif step == "drain":
                doc = admin_status(admin_port)
                busiest = max(doc["pools"][0]["backends"], key=lambda b: b["active_sessions"])
                target = f"main/{busiest['id']}"
                status, _, answer = admin_request(admin_port, "POST", f"/pools/main/backends/{busiest['id']}/drain",
                                                  token=TOKEN)
                check_eq((status, answer.get("state")), (200, "draining"), f"drain {target}")
                driver.answer(target)
            elif step == "enabled":
                states = {b["id"]: b["state"] for b in admin_status(admin_port)["pools"][0]["backends"]}
                check(all(s == "up" for s in states.values()), f"states after the page's enable button: {states}")
                driver.answer("ok")
            else:
                raise AssertionError(f"dashboard_check.js asked for {step!r}")
        driver.proc.wait(timeout=20)
        check(not driver.failed, f"dashboard checks failed: {driver.failed}")
        check(len(driver.passed) >= 7, f"only {len(driver.passed)} checks passed: {driver.output[-10:]}")
        check(os.path.getsize(shot) > 10000, f"no screenshot at {shot}")
        follows = next((p for p in driver.passed if p.startswith("dashboard_follows_sessions")), "")
        return (f"{len(driver.passed)} checks passed ({'; '.join(p.split(':')[0] for p in driver.passed)}); "
                f"{follows.partition(': ')[2]}; screenshot {shot}")


if __name__ == "__main__":
    main()
