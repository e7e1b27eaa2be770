"""Admin API: drain and enable one back end at run time.

POST /pools/{pool}/backends/{id}/drain[?within=] closes that back end's
tunnels with 1012 spread evenly over the window while the other back ends'
sessions carry on; new sessions skip it (its keys go to the next back end,
as if it were down) until POST .../enable brings them back. /status says
"draining", then "drained" once it holds no session; a SIGHUP reload keeps
the state; plain HTTP keep-alive connections to it are closed. Unknown
names are 404, other methods 405 (with Allow), all in JSON; with
[admin] token every POST needs the bearer token (401 otherwise) while GETs
stay open. scripts/wsgate-ctl drives the same calls. (Handlers:
proxy/runtime/admin_api.cpp; routes: proxy/runtime/admin_route.cpp, unit
tested in tests/unit/test_admin_route.cpp.)"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (HOST, Backend, Wsgate, admin_request, admin_status,  # noqa: E402
                     backend_state, check, check_between, check_eq, free_port,
                     http_get, main, raw_exchange, run_async, scrape, test,
                     wait_until, whoami, ws_connect)
from http_backend import HttpBackend  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CTL = os.path.join(ROOT, "scripts", "wsgate-ctl")

DRAINED = 20   # sessions on the drained back end
OTHERS = 20    # sessions on the other back ends
WITHIN = 3.0   # seconds


def three_backends_config(admin_port, b1, b2, b3, drain_timeout="30s", extra_pool=None):
    pools = [{"name": "main", "hash": "query:key",
              "backends": [{"backend": b, "id": b.id} for b in (b1, b2, b3)]}]
    if extra_pool:
        pools.append(extra_pool)
    return {"admin": f"{HOST}:{admin_port}", "server": {"drain_timeout": drain_timeout}, "pools": pools}


async def ws_open(port, path):
    return await ws_connect(port, path, open_timeout=20, close_timeout=5, compression=None)


async def open_split(port, target, drained_count, others_count):
    """Sessions keyed k0, k1, ...: <drained_count> owned by <target> and
    <others_count> by the other back ends. Returns {key: (ws, owner)}."""
    sessions, k, on_target, others = {}, 0, 0, 0
    while (on_target < drained_count or others < others_count) and k < 1000:
        batch = [f"k{n}" for n in range(k, k + 10)]
        k += 10
        opened = await asyncio.gather(*(ws_open(port, f"/?key={key}") for key in batch))
        for key, ws in zip(batch, opened):
            await ws.send("whoami")
            owner = (await asyncio.wait_for(ws.recv(), 5)).removeprefix("id:")
            if owner == target and on_target < drained_count:
                on_target += 1
            elif owner != target and others < others_count:
                others += 1
            else:
                await ws.close()
                continue
            sessions[key] = (ws, owner)
    check_eq(sum(1 for _, o in sessions.values() if o == target), drained_count, f"sessions on {target}")
    return sessions


async def echo_loop(key, ws, stop, result):
    """Echoes numbered messages every 50 ms until <stop> or a close."""
    result.update(closed_at=None, code=None, reason=None, echoed=0, error=None)
    seq = 0
    try:
        while not stop.is_set():
            await ws.send(f"{key}:{seq}")
            reply = await asyncio.wait_for(ws.recv(), 10)
            if reply != f"{key}:{seq}":
                result["error"] = f"expected {key}:{seq}, got {reply!r}"
                return
            seq += 1
            result["echoed"] += 1
            await asyncio.sleep(0.05)
        await ws.close()
    except websockets.ConnectionClosed:
        result["closed_at"] = time.monotonic()
        result["code"], result["reason"] = ws.close_code, ws.close_reason
    except (asyncio.TimeoutError, OSError) as e:
        result["error"] = repr(e)


@test(timeout=90)
def drain_spreads_1012_then_enable_brings_keys_back():
    """20 sessions on b3 and 20 on b1/b2 echo; POST drain b3 ?within=3s is
    200 JSON "draining"; b3's sessions close with 1012 at moments spread
    over >= 1.5 s, all within 3.5 s, while b1/b2's keep echoing; meanwhile
    new sessions on b3's keys land on b1/b2. /status then says "drained"
    with 0 sessions; the access log says reason "drain" for exactly those
    20; enable is 200 "up" and b3's keys return to b3."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate(three_backends_config(admin_port, b1, b2, b3)))
        results, moved_during = {}, {}
        state = {}

        async def scenario():
            sessions = await open_split(gw.port, "b3", DRAINED, OTHERS)
            stop = asyncio.Event()
            loops = [asyncio.create_task(echo_loop(key, ws, stop, results.setdefault(key, {})))
                     for key, (ws, _) in sessions.items()]
            await asyncio.sleep(0.3)
            state["t0"] = time.monotonic()
            status, headers, doc = await asyncio.to_thread(
                admin_request, admin_port, "POST", f"/pools/main/backends/b3/drain?within={WITHIN:g}s")
            state["drain"] = (status, headers.get("content-type"), doc)
            state["status_draining"] = backend_state(await asyncio.to_thread(admin_status, admin_port), "main", "b3")
            # New sessions on b3's keys while it drains.
            for key, (_, owner) in list(sessions.items())[:40]:
                if owner == "b3":
                    moved_during[key] = await asyncio.to_thread(whoami, gw.port, f"/?key={key}")
            await asyncio.sleep(max(0.0, state["t0"] + WITHIN + 1.5 - time.monotonic()))
            stop.set()
            await asyncio.gather(*loops)
            state["sessions"] = sessions

        run_async(scenario(), timeout=60)
        sessions, t0 = state["sessions"], state["t0"]
        status, ctype, doc = state["drain"]
        check_eq((status, ctype), (200, "application/json"), "POST drain")
        check_eq({k: doc.get(k) for k in ("pool", "id", "state", "within_ms")},
                 {"pool": "main", "id": "b3", "state": "draining", "within_ms": int(WITHIN * 1000)}, "drain answer")
        check_eq(state["status_draining"], "draining", "/status state of b3 right after the drain")

        drained = {k: results[k] for k, (_, o) in sessions.items() if o == "b3"}
        kept = {k: results[k] for k, (_, o) in sessions.items() if o != "b3"}
        bad = {k: r for k, r in drained.items() if (r["code"], r["reason"]) != (1012, "service restart")}
        check_eq(list(bad.items())[:2], [], "b3 sessions not closed with 1012 'service restart'")
        offsets = sorted(r["closed_at"] - t0 for r in drained.values())
        spread = offsets[-1] - offsets[0]
        check_between(offsets[0], 0.0, WITHIN + 0.5, "first drain close (s)")
        check_between(offsets[-1], 0.0, WITHIN + 0.5, "last drain close (s)")
        check(spread >= WITHIN / 2, f"drain closes spread over only {spread:.2f}s: {offsets}")
        # Evenly: no third of the window holds more than half of the closes.
        thirds = [sum(1 for o in offsets if i * WITHIN / 3 <= o < (i + 1) * WITHIN / 3) for i in range(3)]
        check(max(thirds) <= DRAINED // 2, f"closes per third of the window: {thirds}")
        broken = {k: r for k, r in kept.items() if r["closed_at"] or r["error"] or r["echoed"] < 20}
        check_eq(list(broken.items())[:2], [], "b1/b2 sessions that closed or stopped echoing")
        check(moved_during, "no b3 key was tried while draining")
        check(all(o in ("b1", "b2") for o in moved_during.values()),
              f"new sessions of b3's keys while draining: {moved_during}")

        doc = admin_status(admin_port)
        check_eq(backend_state(doc, "main", "b3"), "drained", "/status state of b3 once empty")
        check_eq(backend_state(doc, "main", "b1"), "up", "/status state of b1")
        entries = gw.access_log_entries(wait_for=len(sessions), timeout=10)
        drain_entries = [e for e in entries if e.get("reason") == "drain"]
        check_eq(len(drain_entries), DRAINED, "access-log entries with reason 'drain'")
        check_eq({(e["close_code"], e["close_by"], e["backend"]) for e in drain_entries},
                 {(1012, "proxy", b3.address)}, "close_code, close_by, backend of drained sessions")
        check_eq(scrape(admin_port).get("wsgate_drained_sessions_total"), DRAINED, "wsgate_drained_sessions_total")

        status, _, doc = admin_request(admin_port, "POST", "/pools/main/backends/b3/enable")
        check_eq((status, doc.get("state")), (200, "up"), "POST enable")
        check_eq(backend_state(admin_status(admin_port), "main", "b3"), "up", "/status after enable")
        back = {key: whoami(gw.port, f"/?key={key}") for key in drained}
        check_eq(set(back.values()), {"b3"}, "b3's keys after enable")
        return (f"{DRAINED} closed with 1012 over {spread:.2f}s (first {offsets[0]:.2f}s, last {offsets[-1]:.2f}s), "
                f"thirds {thirds}; {len(kept)} others echoed throughout; {len(moved_during)} keys moved meanwhile")


@test(timeout=30)
def refusals_are_json():
    """Unknown pool or back end: 404; GET/PUT on drain or enable: 405 with
    Allow: POST; POST /status: 405 with Allow: GET, HEAD; a bad ?within=:
    400; every body is JSON with an "error". Nothing changed state."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()
        stack.enter_context(Wsgate(three_backends_config(admin_port, b1, b2, b3)))
        cases = [
            ("POST", "/pools/nope/backends/b1/drain", 404, None, 'no pool "nope"'),
            ("POST", "/pools/main/backends/nope/drain", 404, None, 'no back end "nope" in pool "main"'),
            ("POST", "/pools/main/backends/nope/enable", 404, None, 'no back end "nope" in pool "main"'),
            ("GET", "/pools/main/backends/b1/drain", 405, "POST", None),
            ("PUT", "/pools/main/backends/b1/enable", 405, "POST", None),
            ("DELETE", "/pools/main/backends/b1/drain", 405, "POST", None),
            ("POST", "/status", 405, "GET, HEAD", None),
            ("POST", "/metrics", 405, "GET, HEAD", None),
            ("POST", "/pools/main/backends/b1/drain?within=soon", 400, None, None),
            ("POST", "/pools/main/backends/b1/drain?force=1", 400, None, 'unknown parameter "force"'),
            ("GET", "/pools/main/backends", 404, None, "not found"),
        ]
        for method, path, want, allow, message in cases:
            status, headers, doc = admin_request(admin_port, method, path)
            check_eq(status, want, f"{method} {path}")
            check_eq(headers.get("content-type"), "application/json", f"{method} {path}: content type")
            check(isinstance(doc, dict) and doc.get("error"), f"{method} {path}: body {doc!r}")
            if allow:
                check_eq(headers.get("allow"), allow, f"{method} {path}: Allow")
            if message:
                check_eq(doc["error"], message, f"{method} {path}: error")
        states = {b["id"]: b["state"] for b in admin_status(admin_port)["pools"][0]["backends"]}
        check_eq(states, {"b1": "up", "b2": "up", "b3": "up"}, "states after the refusals")
        return f"{len(cases)} refusals"


@test(timeout=30)
def token_guards_posts_only():
    """[admin] token = "SECRET": POST without Authorization, with a wrong
    token (shorter, longer, same length, another scheme) is 401 JSON and
    drains nothing; "Bearer SECRET" is 200; GET /status, /metrics and the
    dashboard need no token. wsgate-ctl exits 1 with the 401 on stderr
    without the token, and passes it from $WSGATE_ADMIN_TOKEN or -t."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()
        gw = Wsgate(three_backends_config(admin_port, b1, b2, b3))
        gw.config_text = gw.config_text.replace("[admin]\n", '[admin]\ntoken = "SECRET"\n', 1)
        stack.enter_context(gw)
        path = "/pools/main/backends/b2/drain?within=1s"
        for token in (None, "", "S", "SECRE", "SECRET1", "SECRES", "secret", "SECRETSECRET"):
            status, _, doc = admin_request(admin_port, "POST", path, token=token)
            check_eq(status, 401, f"POST with token {token!r}")
            check("Bearer" in doc.get("error", ""), f"401 body {doc!r}")
        status, _, _ = raw_exchange_status(admin_port, path, "Basic U0VDUkVU")
        check_eq(status, 401, "POST with Basic auth")
        check_eq(backend_state(admin_status(admin_port), "main", "b2"), "up", "b2 after refused POSTs")
        for get in ("/status", "/metrics", "/healthz", "/"):
            check_eq(http_get(admin_port, get)[0], 200, f"GET {get} without a token")
        refused = ctl(admin_port, "drain", "main", "b2", "1s", expect_ok=False)
        check_eq(refused.returncode, 1, f"wsgate-ctl drain without the token (stderr {refused.stderr.strip()!r})")
        check("401" in refused.stderr, f"wsgate-ctl's refusal: {refused.stderr.strip()!r}")
        status, _, doc = admin_request(admin_port, "POST", path, token="SECRET")
        check_eq((status, doc.get("state")), (200, "drained"), "POST with the token (no session on b2)")
        check_eq(json.loads(ctl(admin_port, "enable", "main", "b2", token="SECRET")).get("state"), "up",
                 "wsgate-ctl enable with $WSGATE_ADMIN_TOKEN")
        check_eq(json.loads(ctl(admin_port, "-t", "SECRET", "drain", "main", "b2", "1s")).get("state"), "drained",
                 "wsgate-ctl -t SECRET drain")
        status, _, doc = admin_request(admin_port, "POST", "/pools/main/backends/b2/enable", token="SECRET")
        check_eq((status, doc.get("state")), (200, "up"), "enable with the token")
        return "8 wrong tokens and Basic refused; the right one accepted"


def raw_exchange_status(port, path, authorization):
    from harness import parse_response
    data = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {authorization}\r\n"
            f"Connection: close\r\n\r\n").encode()
    return parse_response(raw_exchange(port, data))


@test(timeout=60)
def reload_keeps_drain_and_default_window():
    """Drain without ?within= uses server.drain_timeout (2 s): 4 sessions on
    b2 close with 1012 within 2.5 s. A SIGHUP reload (adding a pool) keeps
    b2 "drained" and skipped by new sessions; wsgate-ctl enable brings it
    back and wsgate-ctl status shows the states."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        bx = stack.enter_context(Backend("echo", id="bx"))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate(three_backends_config(admin_port, b1, b2, b3, drain_timeout="2s")))
        results, state = {}, {}

        async def scenario():
            sessions = await open_split(gw.port, "b2", 4, 0)
            stop = asyncio.Event()
            loops = [asyncio.create_task(echo_loop(key, ws, stop, results.setdefault(key, {})))
                     for key, (ws, _) in sessions.items()]
            state["t0"] = time.monotonic()
            out = await asyncio.to_thread(ctl, admin_port, "drain", "main", "b2")
            state["ctl_drain"] = out
            state["t1"] = time.monotonic()  # the drain started between t0 and t1
            await asyncio.sleep(max(0.0, state["t1"] + 3.5 - time.monotonic()))
            stop.set()
            await asyncio.gather(*loops)
            state["sessions"] = sessions

        run_async(scenario(), timeout=40)
        check_eq(json.loads(state["ctl_drain"]).get("within_ms"), 2000, "drain window from server.drain_timeout")
        offsets = sorted(r["closed_at"] - state["t0"] for r in results.values() if r["closed_at"])
        check_eq([(r["code"], r["error"]) for r in results.values()], [(1012, None)] * 4, "b2 sessions")
        check_between(offsets[-1], 0.0, state["t1"] - state["t0"] + 2.5, "last close with the default window (s)")

        check(wait_until(lambda: backend_state(admin_status(admin_port), "main", "b2") == "drained", 5),
              "b2 not drained")
        since = gw.error_log_offset()
        gw.rewrite_config(three_backends_config(admin_port, b1, b2, b3, drain_timeout="2s",
                                                extra_pool={"name": "extra", "backends": [{"backend": bx, "id": "bx"}]}))
        gw.reload()
        check(gw.wait_error_log(r"reloaded .*: generation 2\b", 10, since) is not None, "no reload")
        doc = admin_status(admin_port)
        check_eq(doc["generation"], 2, "generation after SIGHUP")
        check_eq(backend_state(doc, "main", "b2"), "drained", "b2 after the reload")
        check_eq(backend_state(doc, "extra", "bx"), "up", "the new pool's back end")
        owners = {whoami(gw.port, f"/?key={key}") for key in state["sessions"]}
        check("b2" not in owners, f"b2's keys after the reload went to {owners}")
        out = ctl(admin_port, "enable", "main", "b2")
        check_eq(json.loads(out).get("state"), "up", "wsgate-ctl enable")
        owners = {whoami(gw.port, f"/?key={key}") for key in state["sessions"]}
        check_eq(owners, {"b2"}, "b2's keys after enable")
        table = ctl(admin_port, "status")
        rows = {tuple(line.split()[:3]) for line in table.splitlines()[1:]}
        check({("main", "b1", "up"), ("main", "b2", "up"), ("extra", "bx", "up")} <= rows,
              f"wsgate-ctl status rows: {table!r}")
        return f"closes at {', '.join(f'{o:.2f}' for o in offsets)} s; drained across SIGHUP"


def ctl(admin_port, *args, token=None, expect_ok=True):
    """scripts/wsgate-ctl's stdout (or, with expect_ok=False, the finished
    process), talking to <admin_port>."""
    env = dict(os.environ, WSGATE_ADMIN=f"{HOST}:{admin_port}")
    env.pop("WSGATE_ADMIN_TOKEN", None)
    if token:
        env["WSGATE_ADMIN_TOKEN"] = token
    proc = subprocess.run([CTL, *args], env=env, capture_output=True, text=True, timeout=20)
    if not expect_ok:
        return proc
    if proc.returncode != 0:
        raise AssertionError(f"wsgate-ctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@test(timeout=40)
def keepalive_connections_to_a_drained_backend_close():
    """Plain HTTP through one pool of one back end, keep-alive on: the 2nd
    request reuses the 1st connection. Then a slow request is in flight when
    the back end is drained: it completes (200), new requests get 502 (no
    back end), and after enable the next request opens a NEW connection: the
    parked one was closed, and the one in flight was not parked."""
    with HttpBackend("h1") as hb:
        admin_port = free_port()
        config = {"admin": f"{HOST}:{admin_port}", "timeouts": {"keepalive": "60s"},
                  "pools": [{"name": "web", "backends": [{"backend": hb, "id": "h1"}]}]}
        with Wsgate(config) as gw:
            def get(path):
                status, _, body = http_get(gw.port, path, timeout=10)
                return status, body
            check_eq(get("/id"), (200, b"id:h1"), "first GET")
            check_eq(get("/id"), (200, b"id:h1"), "second GET")
            check_eq(hb.connections, 1, "back-end connections after two GETs (one reused)")
            # Two back-end connections (two requests at once), both parked
            # after; then one carries a slow request when the drain comes
            # and the other waits idle.
            pair = [threading.Thread(target=get, args=("/slow?ms=300",)) for _ in range(2)]
            for t in pair:
                t.start()
            for t in pair:
                t.join(10)
            check_eq(hb.connections, 2, "back-end connections after two concurrent requests")
            slow = {}

            def slow_get():
                slow["answer"] = get("/slow?ms=1500")
            t = threading.Thread(target=slow_get)
            t.start()
            check(wait_until(lambda: len(hb.requests_to("/slow")) == 3, 5), "slow request not at the back end")
            check_eq(hb.connections, 2, "the slow request reused a parked connection")
            status, _, doc = admin_request(admin_port, "POST", "/pools/web/backends/h1/drain?within=5s")
            check_eq((status, doc.get("state")), (200, "draining"), "drain with a request in flight")
            check_eq(get("/id")[0], 502, "GET while the only back end is drained")
            t.join(10)
            check_eq(slow.get("answer"), (200, b"slow"), "the request in flight when the drain came")
            connections = hb.connections
            check(wait_until(lambda: backend_state(admin_status(admin_port), "web", "h1") == "drained", 5),
                  "h1 not drained once the request ended")
            admin_request(admin_port, "POST", "/pools/web/backends/h1/enable")
            check_eq(get("/id"), (200, b"id:h1"), "GET after enable")
            check_eq(hb.connections, connections + 1, "a new connection after enable (nothing parked was kept)")
            return f"{hb.connections} back-end connections in all"


if __name__ == "__main__":
    main()
