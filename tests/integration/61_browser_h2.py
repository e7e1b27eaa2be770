#!/usr/bin/python3
"""Headless Chromium over HTTP/2: the demo page (scripts/demo-web/) served
over https by wsgate itself (a TLS listener with http2 on by default, "/"
routed to a static file server, "/chat" to scripts/demo_backend.py), then
its WebSocket. Chromium opens a WebSocket over an existing HTTP/2
connection (RFC 8441) only when that connection's SETTINGS carried
ENABLE_CONNECT_PROTOCOL = 1: this test proves that it does here, by the
access log's proto (h2 for the socket's line) and by counting the
browser's TCP connections to wsgate while the socket is open (one).
Driven by tests/integration/browser/h2_check.js (playwright-core);
exercises proxy/runtime/h2_connection.cpp from a real browser."""

import os
import shutil
import subprocess
import sys
import time

from harness import HOST, Backend, Wsgate, check, check_eq, free_port, main, new_tmpdir, test, wait_until
from tlsutil import Ca, render_toml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROWSER_DIR = os.path.join(ROOT, "tests", "integration", "browser")


def ensure_playwright():
    node, npm = shutil.which("node"), shutil.which("npm")
    check(node and npm, "node and npm are required")
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core", "package.json")):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True, timeout=120,
                       capture_output=True)
    check(os.path.exists("/usr/bin/chromium"), "/usr/bin/chromium is required")
    return node


@test(timeout=120)
def chromium_websocket_over_http2():
    node = ensure_playwright()
    d = new_tmpdir("pki")
    ca = Ca(d)
    cert, key = ca.issue("localhost", dns=["localhost"], ips=[HOST])
    static_port, chat_port = free_port(), free_port()
    static = subprocess.Popen([sys.executable, "-m", "http.server", str(static_port), "--bind", HOST,
                               "--directory", os.path.join(ROOT, "scripts", "demo-web")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chat = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "demo_backend.py"), "--port", str(chat_port),
                             "--id", "chat-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conf = render_toml({
            "server": {"workers": 1, "drain_timeout": "1s"},
            "log": {"access": "@TMP@/access.log", "format": "json", "error": "@TMP@/error.log"},
            "listener": [{"listen": f"{HOST}:@PORT@", "tls": {"cert": cert, "key": key}}],
            "route": [{"path_prefix": "/chat", "pool": "chat"}, {"path_prefix": "/", "pool": "static"}],
            "pool": [{"name": "chat", "hash": "query:user", "backend": [{"address": f"{HOST}:{chat_port}"}]},
                     {"name": "static", "hash": "ip", "backend": [{"address": f"{HOST}:{static_port}"}]}],
        })
        with Wsgate(conf) as gw:
            url = f"https://localhost:{gw.port}/?ws=localhost:{gw.port}"
            browser = subprocess.Popen([node, "h2_check.js", "--page", url], cwd=BROWSER_DIR, text=True,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            lines = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = browser.stdout.readline()
                if not line:
                    break
                lines.append(line.strip())
                if line.strip() == "OPEN" or line.startswith("FAIL"):
                    break
            check("OPEN" in lines, f"browser did not open the socket: {lines[-5:]}")
            conns = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{gw.port} )"],
                                   capture_output=True, text=True).stdout.strip().splitlines()
            browser.stdin.write("close\n")
            browser.stdin.flush()
            browser.wait(timeout=30)
            entries = gw.access_log_entries(wait_for=2, timeout=10)
            sockets = [e for e in entries if e["path"] == "/chat"]
            check_eq(len(sockets), 1, "WebSocket sessions in the access log")
            check_eq(sockets[0]["status"], 101, "the socket's status")
            pages = [e for e in entries if e["path"] != "/chat"]
            check_eq(sockets[0]["proto"], "h2",
                     f"the socket's proto (page requests: {[(e['path'], e['proto']) for e in pages]})")
            check_eq(len(conns), 1, f"browser TCP connections to wsgate while the socket was open: {conns}")
            return f"WebSocket over h2 (RFC 8441), 1 TCP connection; page requests {sorted({e['proto'] for e in pages})}"
    finally:
        for p in (static, chat):
            p.kill()
            p.wait(timeout=5)


main()
