"""Health checks: active probes (tcp, http, websocket) take a killed back end
out within fall x interval and bring it back after rise x interval once it
restarts; passive checks take out a back end whose connects keep failing.
While a back end is down its keys go elsewhere and no other key moves."""

import re
import time
from contextlib import ExitStack

from harness import (HOST, Backend, Wsgate, admin_status, backend_up, check,
                     check_eq, free_port, main, scrape, test,
                     upgrade_then_silence, wait_until, whoami)

INTERVAL = 0.25   # s
FALL, RISE = 3, 2
MARGIN = 1.0      # s of scheduling slack on a shared machine
KEYS = [f"user{n}" for n in range(30)]


def owners(port, keys):
    return {k: whoami(port, f"/?key={k}") for k in keys}


def connect_failures(gw, backend, since, expect=None):
    """How many "connect to ADDR failed" lines the error log has after
    <since>. The error log is written by a thread of its own, so lines may
    lag: poll up to 2 s for <expect> of them, or when <expect> is None wait
    0.3 s for stragglers first."""
    def count():
        return len(re.findall(re.escape(f"connect to {backend.address} failed"), gw.error_log()[since:]))
    if expect is None:
        time.sleep(0.3)
    else:
        wait_until(lambda: count() >= expect, 2)
    return count()


def wait_up_flag(admin_port, backend_id, up, timeout):
    """Seconds until /status shows <backend_id> with up == <up>; None if it
    did not within <timeout>."""
    started = time.monotonic()
    ok = wait_until(lambda: backend_up(admin_status(admin_port), "main", backend_id) is up,
                    timeout, interval=0.02)
    return time.monotonic() - started if ok else None


def check_keys_while_down(gw, before, down_id):
    after = owners(gw.port, before)
    for key, owner in before.items():
        if owner == down_id:
            check(after[key] != down_id and after[key] in ("b1", "b2", "b3"),
                  f"key {key} of down {down_id} went to {after[key]}")
        else:
            check_eq(after[key], owner, f"key {key} of up {owner} while {down_id} is down")
    return sum(1 for o in before.values() if o == down_id)


def active_case(kind):
    """Three back ends with [pool.health] type <kind>; b2 is killed, then
    restarted on the same port."""
    with ExitStack() as stack:
        health_path = "/healthz" if kind == "http" else None
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}", health_path=health_path))
                      for i in (1, 2, 3))
        admin_port = free_port()
        health = {"type": kind, "interval": f"{int(INTERVAL * 1000)}ms", "timeout": "500ms",
                  "rise": RISE, "fall": FALL}
        if health_path:
            health["path"] = health_path
        gw = stack.enter_context(Wsgate({
            "admin": f"{HOST}:{admin_port}",
            "pools": [{"name": "main", "hash": "query:key", "health": health,
                       "backends": [{"backend": b, "id": b.id} for b in (b1, b2, b3)]}]}))
        # Long enough for fall failed probes: all must still be up.
        time.sleep(FALL * INTERVAL + 0.5)
        status = admin_status(admin_port)
        check_eq([backend_up(status, "main", b) for b in ("b1", "b2", "b3")], [True] * 3,
                 f"{kind}: up flags of three live back ends")
        check("is down" not in gw.error_log(), f"{kind}: a live back end went down: {gw.diagnostics()}")

        before = owners(gw.port, KEYS)
        check(0 < sum(1 for o in before.values() if o == "b2") < len(KEYS), f"{kind}: key owners {before}")

        since = gw.error_log_offset()
        b2.kill()
        took_down = wait_up_flag(admin_port, "b2", False, FALL * INTERVAL + MARGIN)
        check(took_down is not None,
              f"{kind}: b2 still up {FALL * INTERVAL + MARGIN:.2f}s after it was killed: {gw.diagnostics()}")
        line = gw.wait_error_log(rf"backend b2 \(pool main\) is down after {FALL} failed checks \(last: [^)]*\)",
                                 2, since)
        check(line is not None, f"{kind}: no 'is down' line: {gw.diagnostics()}")
        metrics = scrape(admin_port)
        check_eq(metrics.get("wsgate_backend_up", pool="main", backend="b2"), 0, f"{kind}: wsgate_backend_up of b2")
        check_eq(metrics.get("wsgate_health_transitions_total"), 1, f"{kind}: transitions after the fall")

        since_down = gw.error_log_offset()
        moved = check_keys_while_down(gw, before, "b2")
        check_eq(connect_failures(gw, b2, since_down), 0, f"{kind}: connects tried to the down b2")

        since = gw.error_log_offset()
        b2.start()
        took_up = wait_up_flag(admin_port, "b2", True, RISE * INTERVAL + MARGIN)
        check(took_up is not None,
              f"{kind}: b2 still down {RISE * INTERVAL + MARGIN:.2f}s after its restart: {gw.diagnostics()}")
        check(gw.wait_error_log(rf"backend b2 \(pool main\) is up after {RISE} successful checks", 2, since),
              f"{kind}: no 'is up' line: {gw.diagnostics()}")
        check_eq(scrape(admin_port).get("wsgate_health_transitions_total"), 2, f"{kind}: transitions after the rise")
        check_eq(owners(gw.port, KEYS), before, f"{kind}: key owners once b2 is back")
        return (f"down {took_down:.2f}s after kill (bound {FALL * INTERVAL + MARGIN:.2f}s), "
                f"up {took_up:.2f}s after restart (bound {RISE * INTERVAL + MARGIN:.2f}s); "
                f"{moved} keys moved and came back, {len(KEYS) - moved} stayed; "
                f"'{line.group(0)}'")


@test(timeout=60)
def active_tcp_health():
    return active_case("tcp")


@test(timeout=60)
def active_http_health():
    return active_case("http")


@test(timeout=60)
def active_websocket_health():
    return active_case("websocket")


def failing_probe_case(kind, backend):
    """<backend> accepts connections but fails a <kind> probe: it goes down
    after 2 probes (fall 2, timeout 300ms)."""
    with ExitStack() as stack:
        b1 = stack.enter_context(backend)
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({
            "admin": f"{HOST}:{admin_port}",
            "pools": [{"name": "main", "health": {"type": kind, "interval": "250ms", "timeout": "300ms",
                                                  "fall": 2},
                       "backends": [{"backend": b1, "id": "b1"}]}]}))
        bound = 2 * (INTERVAL + 0.3) + MARGIN
        took = wait_up_flag(admin_port, "b1", False, bound)
        check(took is not None, f"b1 still up after {bound:.2f}s: {gw.diagnostics()}")
        line = gw.wait_error_log(r"backend b1 \(pool main\) is down after 2 failed checks \(last: [^)]*\)", 2)
        check(line is not None, f"no 'is down' line: {gw.diagnostics()}")
        return f"down after {took:.2f}s: '{line.group(0)}'"


@test(timeout=60)
def http_health_rejects_non_2xx():
    """An HTTP probe answered 426 (a WebSocket server without a plain health
    page) fails."""
    return failing_probe_case("http", Backend("echo", id="b1"))


@test(timeout=60)
def websocket_health_needs_pong():
    """A WebSocket probe whose upgrade succeeds but whose ping gets no pong
    (a back end that answers 101, then nothing) fails."""
    return failing_probe_case("websocket", upgrade_then_silence())


@test(timeout=60)
def passive_health_takes_out_failing_backend():
    """No [pool.health]: b2 is killed; its keys' sessions fail over to the
    next back end; after 3 consecutive connect failures b2 is down for the
    cooldown (log line, /status, /metrics), later sessions of its keys skip
    it without trying, and no other key moves."""
    with ExitStack() as stack:
        b1, b2, b3 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({
            "admin": f"{HOST}:{admin_port}",
            "pools": [{"name": "main", "hash": "query:key",
                       "backends": [{"backend": b, "id": b.id} for b in (b1, b2, b3)]}]}))
        before = owners(gw.port, KEYS)
        b2_keys = [k for k, o in before.items() if o == "b2"]
        check(len(b2_keys) >= 4, f"keys on b2: {b2_keys}")
        since = gw.error_log_offset()
        b2.kill()
        for n, key in enumerate(b2_keys[:3], 1):
            owner = whoami(gw.port, f"/?key={key}")
            check(owner in ("b1", "b3"), f"failover of key {key}: {owner}")
            check_eq(connect_failures(gw, b2, since, expect=n), n, f"connect failures logged after {n} sessions")
        line = gw.wait_error_log(rf"backend {re.escape(b2.address)} down for \d+ ms after 3 consecutive "
                                 r"connect failures", 2, since)
        check(line is not None, f"no passive 'down for' line: {gw.diagnostics()}")
        check_eq(backend_up(admin_status(admin_port), "main", "b2"), False, "/status up of b2")
        check_eq(scrape(admin_port).get("wsgate_backend_up", pool="main", backend="b2"), 0,
                 "wsgate_backend_up of b2")
        since_down = gw.error_log_offset()
        moved = check_keys_while_down(gw, before, "b2")
        check_eq(connect_failures(gw, b2, since_down), 0, "connects tried to b2 while it is down")
        entries = gw.access_log_entries(wait_for=2 * len(KEYS) + 3)
        check(all(e.get("status") == 101 for e in entries), "every session got a 101 despite b2")
        return f"'{line.group(0)}'; {moved} keys of b2 served elsewhere, {len(KEYS) - moved} stayed"


@test(timeout=60)
def passive_cooldown_expires():
    """[pool.health] without a type sets the passive knobs: fall 2 and
    cooldown 1s. A dead b2 is down after 2 failed connects and counts as up
    again once the cooldown ends; restarted, it gets its keys back."""
    with ExitStack() as stack:
        b1, b2 = (stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({
            "admin": f"{HOST}:{admin_port}",
            "pools": [{"name": "main", "hash": "query:key", "health": {"fall": 2, "cooldown": "1s"},
                       "backends": [{"backend": b, "id": b.id} for b in (b1, b2)]}]}))
        before = owners(gw.port, KEYS)
        b2_keys = [k for k, o in before.items() if o == "b2"]
        check(len(b2_keys) >= 2, f"keys on b2: {b2_keys}")
        since = gw.error_log_offset()
        b2.kill()
        check_eq(whoami(gw.port, f"/?key={b2_keys[0]}"), "b1", f"failover of key {b2_keys[0]}")
        # The second failure starts the cooldown: not before this moment.
        down_at = time.monotonic()
        check_eq(whoami(gw.port, f"/?key={b2_keys[1]}"), "b1", f"failover of key {b2_keys[1]}")
        check(gw.wait_error_log(rf"backend {re.escape(b2.address)} down for 1000 ms after 2 consecutive "
                                r"connect failures", 2, since), f"no 'down for' line: {gw.diagnostics()}")
        check_eq(backend_up(admin_status(admin_port), "main", "b2"), False, "/status up of b2 in the cooldown")
        b2.start()
        took = wait_up_flag(admin_port, "b2", True, 1.0 + MARGIN)
        check(took is not None, "b2 still down after its 1s cooldown")
        waited = time.monotonic() - down_at
        check(waited >= 0.95, f"b2 up again after only {waited:.2f}s of a 1s cooldown")
        check_eq(owners(gw.port, KEYS), before, "key owners after the cooldown")
        return f"up again {waited:.2f}s after going down (cooldown 1s)"


if __name__ == "__main__":
    main()
