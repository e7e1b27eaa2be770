"""Reload (SIGHUP): live sessions survive reloads untouched, a removed back
end is drained with 1012 over the drain window, a broken file leaves the old
generation serving, and listeners come and go with the file."""

import asyncio
import re
import socket
import time
from contextlib import ExitStack

import websockets

from harness import (HOST, OP_TEXT, Backend, RawWs, Wsgate, admin_status,
                     check, check_between, check_eq, free_port, main,
                     port_is_listening, raw_request, run_async, scrape, test,
                     upgrade_head, wait_until, whoami, ws_connect)

GENERATION_RE = r"reloaded .*: generation (\d+)"


async def wait_generation(gw, number, since, timeout=10.0):
    """Waits (without blocking the loop) for the error log line of reload
    number <number>; returns the time it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        text = gw.error_log()[since:]
        if re.search(r"reload failed", text):
            raise AssertionError(f"reload to generation {number} failed: {text.strip()[:300]}")
        if any(int(g) == number for g in re.findall(GENERATION_RE, text)):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"no 'generation {number}' line within {timeout}s: {gw.diagnostics()}")


def reload_sync(gw, number, timeout=10.0):
    since = gw.error_log_offset()
    gw.reload()
    found = gw.wait_error_log(GENERATION_RE.replace(r"(\d+)", str(number)) + r"\b", timeout, since)
    check(found is not None, f"no 'generation {number}' after SIGHUP: {gw.diagnostics()}")


SESSIONS = 200


@test(timeout=120)
def sessions_survive_five_reloads():
    """200 sessions each send numbered messages one after the other and check
    every echo, while the file is rewritten and reloaded 5 times (timeouts, an
    added listener, an added pool and route, limits, heartbeat timeout); none
    of it touches the sessions' back ends, so nothing may be lost, duplicated
    or reordered, and every session must keep going after the last reload."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        b2 = stack.enter_context(Backend("echo", id="b2"))
        bx = stack.enter_context(Backend("echo", id="extra"))
        admin_port, port2 = free_port(), free_port()
        admin = f"{HOST}:{admin_port}"
        main_pool = {"name": "main", "hash": "query:key", "backends": [b1, b2]}
        base = {"admin": admin, "pools": [main_pool]}
        gw = stack.enter_context(Wsgate(dict(base)))
        listener1 = f"{HOST}:{gw.port}"
        with_extra = {"pools": [main_pool, {"name": "extra", "backends": [bx]}],
                      "routes": [{"path_prefix": "/", "pool": "main"},
                                 {"path_prefix": "/extra", "pool": "extra"}]}
        steps = [
            ("idle and handshake timeouts", {**base, "timeouts": {"idle": "4m", "handshake": "4s"}}),
            ("listener added", {**base, "timeouts": {"idle": "4m", "handshake": "4s"},
                                "listeners": [listener1, f"{HOST}:{port2}"]}),
            ("pool and route added", {**base, **with_extra, "timeouts": {"idle": "4m", "handshake": "4s"},
                                      "listeners": [listener1, f"{HOST}:{port2}"]}),
            ("drain timeout and limits", {**base, **with_extra, "timeouts": {"idle": "4m", "handshake": "4s"},
                                          "listeners": [listener1, f"{HOST}:{port2}"],
                                          "server": {"drain_timeout": "3s"},
                                          "limits": {"max_message_bytes": 1048576}}),
            ("heartbeat timeout, idle back", {**base, **with_extra, "listeners": [listener1, f"{HOST}:{port2}"],
                                              "server": {"drain_timeout": "3s"},
                                              "limits": {"max_message_bytes": 1048576},
                                              "heartbeat": {"timeout": "5s"}}),
        ]

        tally = {"sent": 0, "received": 0, "duplicated": 0, "misordered": 0, "crossed": 0}
        progress = [0] * SESSIONS      # replies received per session
        errors = []
        opened = 0
        all_open = asyncio.Event()
        stop = asyncio.Event()
        handshakes = asyncio.Semaphore(50)
        reload_times = []
        at_last_reload = []

        async def session(i):
            nonlocal opened
            ws = None
            try:
                async with handshakes:
                    ws = await ws_open(gw.port, f"/?key=s{i}")
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                errors.append(f"session {i}: connect: {e!r}")
            opened += 1
            if opened == SESSIONS:
                all_open.set()
            if ws is None:
                return
            seq = 0
            try:
                await asyncio.wait_for(all_open.wait(), 60)
                while not stop.is_set():
                    await ws.send(f"{i}:{seq}")
                    tally["sent"] += 1
                    while True:
                        reply = await asyncio.wait_for(ws.recv(), 15)
                        ri, _, rs = reply.partition(":")
                        if ri != str(i):
                            tally["crossed"] += 1
                            errors.append(f"session {i} got {reply!r}")
                            continue
                        if int(rs) == seq:
                            break
                        if int(rs) < seq:
                            tally["duplicated"] += 1
                        else:
                            tally["misordered"] += 1
                        errors.append(f"session {i} waiting for {seq} got {reply!r}")
                    tally["received"] += 1
                    seq += 1
                    progress[i] = seq
                # A last marker flushes out any duplicate still in flight.
                await ws.send(f"{i}:end")
                while (reply := await asyncio.wait_for(ws.recv(), 15)) != f"{i}:end":
                    tally["duplicated"] += 1
                    errors.append(f"session {i} after the end got {reply!r}")
                await ws.close()
            except (asyncio.TimeoutError, websockets.WebSocketException, OSError, ValueError) as e:
                errors.append(f"session {i} at message {seq}: {e!r}")
            finally:
                if not ws.closed:
                    ws.transport.abort()

        async def orchestrate():
            await asyncio.wait_for(all_open.wait(), 60)
            await asyncio.sleep(0.5)
            for number, (what, config) in enumerate(steps, 2):
                gw.rewrite_config(config)
                since = gw.error_log_offset()
                gw.reload()
                reload_times.append(await wait_generation(gw, number, since))
                await asyncio.sleep(0.4)
            at_last_reload.extend(progress)
            await asyncio.sleep(1.0)
            stop.set()

        async def everything():
            await asyncio.gather(orchestrate(), *(session(i) for i in range(SESSIONS)))

        started = time.monotonic()
        run_async(everything(), timeout=100)
        took = time.monotonic() - started
        lost = tally["sent"] - tally["received"]
        summary = (f"{SESSIONS} sessions, 5 reloads (each adopted in <= {max(reload_times or [0]):.2f}s): "
                   f"{tally['sent']} sent, {tally['received']} received, {lost} lost, "
                   f"{tally['duplicated']} duplicated, {tally['misordered']} misordered in {took:.1f}s")
        check(not errors and lost == 0 and tally["crossed"] == 0,
              f"{summary}; first errors: {errors[:3]}")
        check_eq(len(reload_times), 5, "reloads done")
        stalled = [i for i in range(SESSIONS) if progress[i] <= at_last_reload[i]]
        check_eq(stalled, [], "sessions without an echo after the last reload")

        status = admin_status(admin_port)
        check_eq(status["generation"], 6, "/status generation")
        check_eq(status["reloads"], {"success": 5, "failure": 0}, "/status reloads")
        check_eq(scrape(admin_port).get("wsgate_reloads_total", result="success"), 5,
                 "wsgate_reloads_total{result=\"success\"}")

        ours = gw.access_log_entries(wait_for=SESSIONS, timeout=10)
        check_eq(len(ours), SESSIONS, "access-log entries of the 200 sessions")
        bad = [e for e in ours if (e.get("status"), e.get("close_code"), e.get("close_by")) != (101, 1000, "client")]
        check_eq(bad[:1], [], "sessions not ended by the client's 1000")
        messages = sum(e.get("messages_in", 0) for e in ours)
        check_eq(messages, tally["sent"] + SESSIONS, "messages_in over the access log (incl. end markers)")
        check_eq(whoami(port2, "/extra/x"), "extra", "the added pool, through the added listener")
        check(whoami(gw.port, "/?key=new") in ("b1", "b2"), "a new session on the main pool")
        return summary


async def ws_open(port, path):
    return await ws_connect(port, path, open_timeout=20, close_timeout=5, compression=None)


DRAINED = 30
OTHERS = 40


def drain_case(idle):
    """drain_timeout 4s, timeouts.idle <idle>; 30 sessions on b3 and 40 on b1/b2 echo numbered
    messages; a reload removes b3: exactly b3's sessions get close 1012
    "service restart", at moments spread over >= 2 s and all within 4.5 s,
    while the others keep echoing. Afterwards b3's keys go to b1/b2 and the
    others' keys stay where they were; the access log and /metrics agree."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()

        def config(backends):
            return {"admin": f"{HOST}:{admin_port}", "server": {"drain_timeout": "4s"},
                    "timeouts": {"idle": idle},
                    "pools": [{"name": "main", "hash": "query:key",
                               "backends": [{"backend": b, "id": b.id} for b in backends]}]}

        gw = stack.enter_context(Wsgate(config([b1, b2, b3])))
        sessions = {}     # key -> (websocket, owner id)
        results = {}      # key -> dict(closed_at, code, reason, echoed, echoed_late)
        stop = asyncio.Event()
        t0 = [None]

        async def open_sessions():
            k, on_b3, others = 0, 0, 0
            while on_b3 < DRAINED and k < 1000:
                batch = [f"k{n}" for n in range(k, k + 20)]
                k += 20
                opened = await asyncio.gather(*(ws_open(gw.port, f"/?key={key}") for key in batch))
                for key, ws in zip(batch, opened):
                    await ws.send("whoami")
                    owner = (await asyncio.wait_for(ws.recv(), 5)).removeprefix("id:")
                    if owner == "b3" and on_b3 < DRAINED:
                        on_b3 += 1
                    elif owner != "b3" and others < OTHERS:
                        others += 1
                    else:
                        await ws.close()
                        continue
                    sessions[key] = (ws, owner)
            check_eq(sum(1 for _, o in sessions.values() if o == "b3"), DRAINED, "sessions on b3")

        async def echo_loop(key, ws):
            r = results[key] = {"closed_at": None, "code": None, "reason": None, "echoed": 0,
                                "echoed_late": 0, "error": None}
            seq = 0
            try:
                while not stop.is_set():
                    await ws.send(f"{key}:{seq}")
                    reply = await asyncio.wait_for(ws.recv(), 10)
                    if reply != f"{key}:{seq}":
                        r["error"] = f"expected {key}:{seq}, got {reply!r}"
                        return
                    seq += 1
                    r["echoed"] += 1
                    if t0[0] is not None and time.monotonic() - t0[0] > 4.5:
                        r["echoed_late"] += 1
                    await asyncio.sleep(0.05)
                await ws.close()
            except websockets.ConnectionClosed:
                r["closed_at"] = time.monotonic()
                r["code"], r["reason"] = ws.close_code, ws.close_reason
            except (asyncio.TimeoutError, OSError) as e:
                r["error"] = repr(e)

        async def drain():
            await open_sessions()
            loops = [asyncio.create_task(echo_loop(key, ws)) for key, (ws, _) in sessions.items()]
            await asyncio.sleep(0.5)
            gw.rewrite_config(config([b1, b2]))
            since = gw.error_log_offset()
            t0[0] = time.monotonic()
            gw.reload()
            await wait_generation(gw, 2, since)
            await asyncio.sleep(max(0.0, t0[0] + 5.5 - time.monotonic()))
            stop.set()
            await asyncio.gather(*loops)

        run_async(drain(), timeout=60)
        drained = {k: results[k] for k, (_, o) in sessions.items() if o == "b3"}
        kept = {k: results[k] for k, (_, o) in sessions.items() if o != "b3"}
        bad = {k: r for k, r in drained.items() if (r["code"], r["reason"]) != (1012, "service restart")}
        check_eq(list(bad.items())[:2], [], "b3 sessions not closed with 1012 'service restart'")
        offsets = sorted(r["closed_at"] - t0[0] for r in drained.values())
        spread = offsets[-1] - offsets[0]
        check_between(offsets[0], 0.0, 4.5, "first drain close after the reload (s)")
        check_between(offsets[-1], 0.0, 4.5, "last drain close after the reload (s)")
        check(spread >= 2.0, f"drain closes spread over only {spread:.2f}s: {offsets}")
        broken = {k: r for k, r in kept.items() if r["closed_at"] or r["error"] or not r["echoed_late"]}
        check_eq(list(broken.items())[:2], [], "b1/b2 sessions that closed or stopped echoing")

        moved = {k: whoami(gw.port, f"/?key={k}") for k in sessions}
        for key, (_, owner) in sessions.items():
            if owner == "b3":
                check(moved[key] in ("b1", "b2"), f"key {key} of removed b3 now on {moved[key]}")
            else:
                check_eq(moved[key], owner, f"key {key} (was on {owner}) after removing b3")

        entries = gw.access_log_entries(wait_for=len(sessions) + len(moved), timeout=10)
        removed = [e for e in entries if e.get("reason") == "backend removed"]
        check_eq(len(removed), DRAINED, "access-log entries with reason 'backend removed'")
        check_eq({(e["close_code"], e["close_by"], e["backend"]) for e in removed},
                 {(1012, "proxy", b3.address)}, "close_code, close_by, backend of drained sessions")
        check_eq(scrape(admin_port).get("wsgate_drained_sessions_total"), DRAINED,
                 "wsgate_drained_sessions_total")
        b3_closes = [e for e in b3.close_events(wait_for=DRAINED) if e.get("code") == 1012]
        check_eq(len(b3_closes), DRAINED, "close frames with 1012 that b3 received")
        return (f"{DRAINED} drained over {spread:.2f}s (first {offsets[0]:.2f}s, last {offsets[-1]:.2f}s "
                f"after SIGHUP), {len(kept)} kept sessions echoed throughout "
                f"({sum(r['echoed'] for r in kept.values())} echoes), "
                f"{DRAINED} b3 keys moved, {len(kept)} other keys stayed")


@test(timeout=90)
def removed_backend_drains_with_1012():
    """With the default idle timeout set: a regression test for the drain
    deadline that the idle deadline used to overwrite."""
    return drain_case("5m")


@test(timeout=90)
def removed_backend_drains_without_idle_timeout():
    return drain_case("0s")


def broken_lines(good_text, kind):
    """<good_text> broken on purpose: (text, 1-based line of the error)."""
    lines = good_text.split("\n")
    at = lines.index("[server]") + 1
    if kind == "unknown key":
        lines.insert(at, "bogus_key = 1")
    else:
        lines.insert(at, 'bogus_key = "unterminated')   # a TOML syntax error
    return "\n".join(lines), at + 1


@test(timeout=60)
def broken_file_keeps_old_generation():
    """A file with an unknown key, then one with a TOML syntax error: each
    reload fails with `reload failed: FILE:LINE:COL:`, is counted in
    wsgate_reloads_total{result="failure"}, and the old generation keeps
    serving (the route the broken file adds is still 404; the existing
    session and new ones work). A fixed file then reloads."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        b2 = stack.enter_context(Backend("echo", id="b2"))
        admin_port = free_port()
        main_route = {"path_prefix": "/a", "pool": "main"}
        base = {"admin": f"{HOST}:{admin_port}", "pools": [{"name": "main", "backends": [b1]}],
                "routes": [main_route]}
        gw = stack.enter_context(Wsgate(base))
        new = {**base, "pools": [{"name": "main", "backends": [b1]}, {"name": "two", "backends": [b2]}],
               "routes": [main_route, {"path_prefix": "/two", "pool": "two"}]}
        ws = RawWs.connect(gw.port, "/a/old")
        try:
            gw.rewrite_config(new)
            good_text = gw.config_text
            details = []
            for failures, kind in enumerate(("unknown key", "syntax error"), 1):
                text, line = broken_lines(good_text, kind)
                gw.rewrite_config(text)
                since = gw.error_log_offset()
                gw.reload()
                found = gw.wait_error_log(r"reload failed: (.*):(\d+):(\d+): (.*)", 5, since)
                check(found is not None, f"{kind}: no 'reload failed' line: {gw.diagnostics()}")
                check_eq((found.group(1), int(found.group(2))), (gw.config_path, line),
                         f"{kind}: FILE:LINE of the error")
                details.append(f"{kind} -> :{found.group(2)}:{found.group(3)}: {found.group(4)[:40]}")
                metrics = scrape(admin_port)
                check_eq(metrics.get("wsgate_reloads_total", result="failure"), failures,
                         f"{kind}: wsgate_reloads_total{{result=\"failure\"}}")
                check_eq(metrics.get("wsgate_reloads_total", result="success"), 0,
                         f"{kind}: wsgate_reloads_total{{result=\"success\"}}")
                check_eq(metrics.get("wsgate_config_generation"), 1, f"{kind}: wsgate_config_generation")
                check_eq(admin_status(admin_port)["generation"], 1, f"{kind}: /status generation")
                check_eq(whoami(gw.port, "/a/fresh"), "b1", f"{kind}: a new session")
                status, _, _ = raw_request(gw.port, upgrade_head("/two", f"{HOST}:{gw.port}"))
                check_eq(status, 404, f"{kind}: the route only the broken file has")
                ws.send_text(f"still here {failures}")
                check_eq(ws.recv_message(timeout=5), (OP_TEXT, f"still here {failures}".encode()),
                         f"{kind}: echo on the session opened before")
            gw.rewrite_config(good_text)
            reload_sync(gw, 2)
            check_eq(whoami(gw.port, "/two"), "b2", "the route of the fixed file")
            ws.send_text("after the fix")
            check_eq(ws.recv_message(timeout=5), (OP_TEXT, b"after the fix"), "echo after the fixed reload")
            check_eq(scrape(admin_port).get("wsgate_reloads_total", result="failure"), 2,
                     "failures after the fixed reload")
            return "; ".join(details)
        finally:
            ws.close()


def connect_refused(port):
    try:
        socket.create_connection((HOST, port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@test(timeout=60)
def listeners_follow_the_file():
    """A reload that adds a listener: it accepts sessions. A reload that
    removes the first one: it stops accepting (connection refused) while the
    session opened on it keeps echoing."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        admin_port, port2 = free_port(), free_port()
        base = {"admin": f"{HOST}:{admin_port}", "backends": [b1]}
        gw = stack.enter_context(Wsgate(base))
        l1, l2 = f"{HOST}:{gw.port}", f"{HOST}:{port2}"
        check(connect_refused(port2), "second port refused before the reload")
        ws = RawWs.connect(gw.port, "/on-first")
        try:
            gw.rewrite_config({**base, "listeners": [l1, l2]})
            reload_sync(gw, 2)
            check(wait_until(lambda: port_is_listening(port2), 3), "added listener not listening")
            check_eq(whoami(port2, "/on-second"), "b1", "session through the added listener")
            check_eq(whoami(gw.port, "/first-still"), "b1", "session through the first listener")

            gw.rewrite_config({**base, "listeners": [l2]})
            reload_sync(gw, 3)
            check(wait_until(lambda: not port_is_listening(gw.port), 3),
                  "removed listener still in LISTEN state after 3s")
            check(connect_refused(gw.port), "connection to the removed listener not refused")
            for i in range(5):
                ws.send_text(f"old listener {i}")
                check_eq(ws.recv_message(timeout=5), (OP_TEXT, f"old listener {i}".encode()),
                         "echo on the session of the removed listener")
            check_eq(whoami(port2, "/second-still"), "b1", "session through the remaining listener")
            metrics = scrape(admin_port)
            check_eq(metrics.get("wsgate_connections_active", listener=l1), 1,
                     "wsgate_connections_active of the removed listener with its session open")
            ws.send_close(1000)
            check_eq(ws.recv_close(timeout=5), (1000, ""), "close reply on the old listener's session")
            return "added listener served; removed listener refused while its session echoed"
        finally:
            ws.close()


if __name__ == "__main__":
    main()
