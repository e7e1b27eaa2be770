"""The real Socket.IO stack through wsgate: three `socket.io` servers behind
one pool, `socket.io-client` in Node with the default transports (HTTP
long-polling first, then the upgrade to WebSocket). Socket.IO needs every
request of a session, polling and upgrade alike, on the server that holds
the session ("Using multiple nodes" in its documentation): with a
sticky_cookie, and with hash = "ip" from distinct 127.0.0.x addresses, 50
clients each exchange 20 events and every session stays on one back end.
Against a pool that hashes each request apart and has no sticky cookie, the
servers report "Session ID unknown": the test can fail.

Needs node and npm; installs the pinned packages (npm ci) when
tests/integration/socketio/node_modules is missing."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import HOST, HarnessError, Wsgate, _spawn, check, check_eq, main, new_tmpdir, test  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SIO_DIR = os.path.join(HERE, "socketio")
CLIENTS, EVENTS = 50, 20


def node_tools():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise HarnessError("node and npm are required for the Socket.IO test (Debian: apt-get install nodejs npm)")
    if not os.path.isfile(os.path.join(SIO_DIR, "node_modules", "socket.io", "package.json")):
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=SIO_DIR, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)
        if proc.returncode != 0:
            raise HarnessError(f"npm ci in tests/integration/socketio failed: {proc.stdout.decode()[-300:]}")
    return node


class SioServer:
    """One `node server.js` back end; its log of requests is `events()`."""

    def __init__(self, node, id, tmpdir):
        self.id = id
        self.events_path = os.path.join(tmpdir, f"{id}.events")
        self.proc = _spawn([node, os.path.join(SIO_DIR, "server.js"), id, "0", self.events_path],
                           cwd=SIO_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening "):
            raise HarnessError(f"socket.io server {id} did not start: {line!r}")
        self.port = int(line.split()[1])
        self.address = f"{HOST}:{self.port}"

    def events(self):
        with open(self.events_path) as f:
            return [json.loads(line) for line in f if line.strip()]


def start_servers(tmpdir):
    node = node_tools()
    return node, [SioServer(node, f"s{i}", tmpdir) for i in range(1, 4)]


def gateway(servers, hash, sticky_cookie=""):
    backends = "".join(f'[[pool.backend]]\naddress = "{s.address}"\n' for s in servers)
    sticky = f'sticky_cookie = "{sticky_cookie}"\n' if sticky_cookie else ""
    return Wsgate(f"""
[server]
workers = 2
drain_timeout = "2s"        # long-polls may be in flight when the test stops wsgate
[log]
access = "@TMP@/access.log"
error = "@TMP@/error.log"
[[listener]]
listen = "{HOST}:@PORT@"
[timeouts]
handshake = "5s"
response = "60s"
[heartbeat]
interval = "0s"
[[pool]]
name = "sio"
hash = "{hash}"
{sticky}{backends}""")


def run_clients(node, port, clients, sources=None, cookies=False, timeout_ms=30000):
    argv = [node, os.path.join(SIO_DIR, "client.js"), f"http://{HOST}:{port}", str(clients), str(EVENTS),
            f"--timeout={timeout_ms}"]
    if sources:
        argv.append(",".join(sources))
    if cookies:
        argv.append("--cookies")
    proc = subprocess.run(argv, cwd=SIO_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    try:
        return json.loads(proc.stdout.decode().strip().splitlines()[-1])["results"]
    except (IndexError, ValueError, KeyError):
        raise HarnessError(f"client.js exited {proc.returncode}: {proc.stderr.decode()[-500:]}")


def backends_per_session(servers):
    """{engine.io session id: {back end ids that saw its handshake, polls or upgrade}}"""
    seen = defaultdict(set)
    for s in servers:
        for e in s.events():
            if e.get("sid"):
                seen[e["sid"]].add(e["backend"])
    return seen


def check_all_pinned(results, servers, clients):
    failed = [r for r in results if not r["ok"]]
    check(not failed, f"{len(failed)}/{clients} clients failed, first: {failed[:1]}")
    check_eq(sum(r["received"] for r in results), clients * EVENTS, "events echoed")
    sessions = backends_per_session(servers)
    kinds = defaultdict(set)
    for s in servers:
        for e in s.events():
            if e.get("sid"):
                kinds[e["sid"]].add((e["kind"], e.get("transport")))
    for r in results:
        check_eq(len(sessions[r["sid"]]), 1, f"back ends of client {r['index']} (sid {r['sid']})")
        check(("http", "polling") in kinds[r["sid"]] and ("upgrade", "websocket") in kinds[r["sid"]],
              f"client {r['index']} did not both poll and upgrade: {kinds[r['sid']]}")
        check_eq(set(r["servers"]), sessions[r["sid"]], f"echo servers of client {r['index']}")
    errors = [e for s in servers for e in s.events() if e["kind"] == "error"]
    check_eq(errors, [], "connection errors at the servers")
    used = {b for r in results for b in sessions[r["sid"]]}
    check(len(used) >= 2, f"all sessions on {used}: the pool spread nothing, so pinning shows nothing")
    return used


@test(timeout=180)
def sticky_cookie_pins_socketio_sessions():
    tmp = new_tmpdir("sio")
    node, servers = start_servers(tmp)
    # Every polling request carries a fresh random `t`: hashed on it, each
    # request would go anywhere. Only the cookie keeps a session together.
    with gateway(servers, "query:t", sticky_cookie="io_srv") as gw:
        results = run_clients(node, gw.port, CLIENTS, cookies=True)
        used = check_all_pinned(results, servers, CLIENTS)
        cookies = [e["cookie"] for s in servers for e in s.events() if e["kind"] == "upgrade"]
        check(all("io_srv=" in c for c in cookies), f"an upgrade without the sticky cookie: {cookies[:3]}")
        lines = gw.access_log_lines(wait_for=CLIENTS * 3)
        return f"{CLIENTS} clients x {EVENTS} events on {sorted(used)}, {len(lines)} access-log lines"


@test(timeout=180)
def ip_hash_pins_socketio_sessions_from_distinct_addresses():
    tmp = new_tmpdir("sio")
    node, servers = start_servers(tmp)
    sources = [f"127.0.0.{i}" for i in range(2, 2 + CLIENTS)]
    with gateway(servers, "ip") as gw:
        results = run_clients(node, gw.port, CLIENTS, sources=sources)
        used = check_all_pinned(results, servers, CLIENTS)
        # The back end saw each client's own address in X-Forwarded-For.
        by_sid = {r["sid"]: r["localAddress"] for r in results}
        for s in servers:
            for e in s.events():
                if e.get("sid") in by_sid and e["kind"] in ("http", "upgrade"):
                    check_eq(e["xff"], by_sid[e["sid"]], f"X-Forwarded-For of session {e['sid']}")
        return f"{CLIENTS} clients from distinct addresses on {sorted(used)}"


@test(timeout=180)
def without_stickiness_socketio_fails_as_documented():
    tmp = new_tmpdir("sio")
    node, servers = start_servers(tmp)
    with gateway(servers, "query:t") as gw:
        clients = 10
        results = run_clients(node, gw.port, clients, cookies=True, timeout_ms=8000)
        failed = [r for r in results if not r["ok"]]
        deadline = time.monotonic() + 3
        unknown = []
        while not unknown and time.monotonic() < deadline:
            unknown = [e for s in servers for e in s.events()
                       if e["kind"] == "error" and e["message"] == "Session ID unknown"]
            time.sleep(0.1)
        check(unknown, "no server reported 'Session ID unknown'")
        check(failed, "every client succeeded without stickiness: the pinned tests prove nothing")
        return f"{len(failed)}/{clients} clients failed, {len(unknown)} 'Session ID unknown' at the servers"


if __name__ == "__main__":
    main()
