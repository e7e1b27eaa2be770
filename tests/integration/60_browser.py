#!/usr/bin/python3
"""The demo end to end in a real browser: three chat back ends
(scripts/demo_backend.py) behind `$WSGATE_BUILD/wsgate` with conf/demo.toml
(ports rewritten to free ones), the page of scripts/demo-web/ served over
HTTP, and headless Chromium driven by tests/integration/browser/demo_check.js
(playwright-core). Tabs with the same user name must share a back end and see
each other's messages.

Installs what it needs when missing: Chromium (`scripts/install-deps
chromium`) and the pinned playwright-core (`npm ci`). Missing node/npm or
wsgate is a FAIL, never a silent skip.

`--direct` points the page at one back end without wsgate: a check of the
page and the browser tooling alone.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROWSER_DIR = os.path.join(ROOT, "tests", "integration", "browser")
PYTHON = "/usr/bin/python3"
CHROMIUM = "/usr/bin/chromium"
BUDGET_S = 270  # run.py kills a file after 300 s
START_WAIT_S = 10
BROWSER_BUDGET_S = 90

failures = 0


def report_pass(name):
    print(f"PASS {name}", flush=True)


def report_fail(name, why):
    global failures
    failures += 1
    print(f"FAIL {name}: {why}", flush=True)


class Setup(Exception):
    """A missing prerequisite or a process that would not start."""


def tail(path, lines=5):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def free_ports(count):
    """<count> distinct free loopback ports (all bound at once, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Processes:
    """The processes this test started; stop() ends exactly those."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.started = []

    def start(self, name, argv):
        log = os.path.join(self.logdir, f"{name}.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc, log

    def start_listening(self, name, argv, port):
        """Starts <argv> and waits (bounded) until it accepts on <port>."""
        proc, log = self.start(name, argv)
        deadline = time.monotonic() + START_WAIT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Setup(f"{name} exited with {proc.returncode}: {tail(log)}")
            if accepts(port):
                return
            time.sleep(0.05)
        raise Setup(f"{name} not listening on 127.0.0.1:{port} after {START_WAIT_S} s: {tail(log)}")

    def stop(self):
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run_bounded(argv, cwd, timeout):
    """Runs <argv> in its own process group, killing the group after <timeout> s.
    Returns (exit code or None on time-out, combined output)."""
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        return None, out.decode(errors="replace")


def remaining(deadline):
    return max(1, int(deadline - time.monotonic()))


def ensure_browser_tools(deadline):
    """Node, npm, Chromium and playwright-core, installing the last two."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise Setup("node and npm are required for the browser test (Debian: apt-get install nodejs npm)")
    if not os.access(CHROMIUM, os.X_OK):
        code, out = run_bounded([os.path.join(ROOT, "scripts", "install-deps"), "chromium"], ROOT,
                                min(200, remaining(deadline)))
        if code != 0 or not os.access(CHROMIUM, os.X_OK):
            raise Setup(f"could not install chromium (exit {code}): {out.strip()[-300:]}")
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")):
        code, out = run_bounded([npm, "ci", "--no-audit", "--no-fund"], BROWSER_DIR,
                                min(150, remaining(deadline)))
        if code != 0:
            raise Setup(f"npm ci in tests/integration/browser failed (exit {code}): {out.strip()[-300:]}")
    return node


def demo_config(ws_port, backend_ports):
    """conf/demo.toml with its listener and back-end ports replaced."""
    with open(os.path.join(ROOT, "conf", "demo.toml")) as f:
        text = f.read()
    for old, new in zip([8080, 9001, 9002, 9003], [ws_port, *backend_ports]):
        address = f'"127.0.0.1:{old}"'
        if address not in text:
            raise Setup(f"conf/demo.toml has no {address} to rewrite")
        text = text.replace(address, f'"127.0.0.1:{new}"')
    return text


def check_demo_config(wsgate):
    code, out = run_bounded([wsgate, "-t", "-c", "conf/demo.toml"], ROOT, 10)
    if code == 0 and "is valid" in out:
        report_pass("demo_config_valid")
    else:
        report_fail("demo_config_valid", f"wsgate -t -c conf/demo.toml exited {code}: {out.strip()[:300]}")


def run_browser(node, page_url, deadline):
    budget_ms = 1000 * min(BROWSER_BUDGET_S, remaining(deadline) - 10)
    code, out = run_bounded([node, "demo_check.js", "--page", page_url, "--budget-ms", str(budget_ms)],
                            BROWSER_DIR, budget_ms / 1000 + 15)
    reported = False
    for line in out.splitlines():
        if line.startswith("PASS "):
            report_pass(line[5:])
        elif line.startswith("FAIL "):
            name, _, why = line[5:].partition(": ")
            report_fail(name, why)
            reported = True
    if code != 0 and not reported:
        why = "timed out" if code is None else f"exited {code}"
        report_fail("browser_demo", f"demo_check.js {why}: {out.strip()[-300:]}")


def main():
    direct = "--direct" in sys.argv[1:]
    deadline = time.monotonic() + BUDGET_S
    wsgate = os.path.join(ROOT, os.environ.get("WSGATE_BUILD", "build"), "wsgate")
    tmp = tempfile.mkdtemp(prefix="wsgate-60-browser-")
    procs = Processes(tmp)
    try:
        if not direct and not os.access(wsgate, os.X_OK):
            raise Setup(f"wsgate binary not found at {wsgate} (build it with `make all`)")
        node = ensure_browser_tools(deadline)
        ws_port, http_port, *backend_ports = free_ports(5)

        for i, port in enumerate(backend_ports, 1):
            procs.start_listening(f"backend-{i}", [PYTHON, "scripts/demo_backend.py", "--port",
                                                   str(port), "--id", f"chat-{i}"], port)
        if direct:
            ws_port = backend_ports[0]
        else:
            check_demo_config(wsgate)
            config = os.path.join(tmp, "demo.toml")
            with open(config, "w") as f:
                f.write(demo_config(ws_port, backend_ports))
            procs.start_listening("wsgate", [wsgate, "-c", config], ws_port)
        procs.start_listening("http", [PYTHON, "-m", "http.server", "--bind", "127.0.0.1",
                                       str(http_port), "--directory", "scripts/demo-web"], http_port)

        run_browser(node, f"http://127.0.0.1:{http_port}/?ws=127.0.0.1:{ws_port}", deadline)
        if failures and not direct:
            print(f"# wsgate log: {tail(os.path.join(tmp, 'wsgate.log'), 10)}", flush=True)
    except Setup as error:
        report_fail("browser_demo", error)
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
