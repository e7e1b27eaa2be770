"""Resource exhaustion: a descriptor limit lower than the load, and a
thousand slowloris connections at once."""

import os
import re
import socket
import time

from harness import (HOST, OP_TEXT, Backend, RawWs, Wsgate, check, check_between,
                     check_eq, main, parse_response, render_config, sanitizer_build,
                     test, upgrade_head, wait_until)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def config_text(backends, extra="", **tables):
    """render_config() text with placeholders for Wsgate, plus <extra> TOML
    appended (it applies to the last [[pool]])."""
    return render_config("@PORT@", "@TMP@", backends=backends, **tables) + "\n" + extra


def parse_stamp(text):
    """Seconds of an error-log timestamp like 2026-11-25T21:21:54.197Z."""
    from datetime import datetime
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def echo_ok(ws, text):
    try:
        ws.send_text(text)
        return ws.recv_message(timeout=5) == (OP_TEXT, text.encode())
    except OSError:
        return False


def open_session(port, timeout=3.0):
    try:
        return RawWs.connect(port, timeout=timeout)
    except Exception:
        return None


def attempt_outcomes(port, count, wait):
    """Opens <count> connections that each send an upgrade head, waits up to
    <wait> s, and classifies them: 'refused NNN', 'closed', 'reset',
    'upgraded' or 'no answer'."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((HOST, port))
            s.sendall(upgrade_head(host=f"{HOST}:{port}"))
        except OSError:
            s.close()
            socks.append(None)
            continue
        socks.append(s)
    outcomes = {}
    deadline = time.monotonic() + wait
    for s in socks:
        if s is None:
            outcome = "connect failed"
        else:
            data = b""
            outcome = "no answer"
            try:
                while time.monotonic() < deadline:
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    if b"\r\n\r\n" in data:
                        break
                status = parse_response(data)[0]
                if status == 101:
                    outcome = "upgraded"
                elif status:
                    outcome = f"refused {status}"
                elif time.monotonic() < deadline:
                    outcome = "closed"
            except socket.timeout:
                pass
            except ConnectionResetError:
                outcome = "reset"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes, socks


@test(timeout=90)
def fd_limit_keeps_sessions_and_recovers():
    # wsgate runs with RLIMIT_NOFILE = 80 and gets more connections than that
    # allows. It must keep the sessions it has, log the shortage at most
    # about once a second, and serve new sessions once descriptors free up.
    # Passive health is set to a 1 s cooldown: a failed back-end socket()
    # (EMFILE) currently counts as a back-end failure (see the report).
    if sanitizer_build():
        # UBSan's vptr check probes memory through a pipe(); with no
        # descriptor left that probe fails and it reports a bad vptr in
        # valid code (seen in fmt::format_to), so this scenario only runs
        # in the plain build.
        return "skipped under sanitizers (UBSan needs a spare descriptor)"
    limit = 80
    with Backend("echo", id="b1") as b, \
            Wsgate(config_text([b], '[pool.health]\ncooldown = "1s"\n'), nofile=limit) as gw:
        base = fd_count(gw.pid)
        capacity = (limit - base) // 2
        held = []
        for _ in range(capacity + 5):
            ws = open_session(gw.port, timeout=2)
            if ws is None:
                break
            held.append(ws)
        check_between(len(held), capacity - 2, capacity, f"sessions established under a limit of "
                      f"{limit} descriptors ({base} in use at start)")
        outcomes, extra = attempt_outcomes(gw.port, 40, wait=3.0)
        check("upgraded" not in outcomes, f"an upgrade succeeded over the limit: {outcomes}")
        bad = [i for i, ws in enumerate(held) if not echo_ok(ws, f"held-{i}")]
        check_eq(bad, [], "held sessions that stopped echoing while descriptors were short")
        stamps = [parse_stamp(m) for m in re.findall(r"^(\S+) \[error\] accept failed", gw.error_log(), re.M)]
        accept_errors = len(stamps)
        check(accept_errors >= 1, "no 'accept failed' line while out of descriptors")
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        check(all(g >= 0.9 for g in gaps), f"'accept failed' lines closer than a second: {gaps}")
        connect_errors = len(re.findall(r"connect to \S+ failed: Too many open files", gw.error_log()))
        for s in extra:
            if s is not None:
                s.close()
        for ws in held:
            ws.send_close(1000)
            ws.wait_eof(3)
            ws.close()
        # Recovery: once the descriptors are back, a new session works.
        recovered_at = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ws = open_session(gw.port, timeout=2)
            if ws is not None and echo_ok(ws, "recovered"):
                recovered_at = time.monotonic()
                ws.send_close(1000)
                ws.wait_eof(3)
                ws.close()
                break
            if ws is not None:
                ws.close()
            time.sleep(0.2)
        check(recovered_at is not None, "no session possible 10 s after the load ended")
        check(wait_until(lambda: fd_count(gw.pid) <= base, 8), "descriptors not given back")
        return (f"{len(held)} sessions held under {limit} fds; 40 more: {outcomes}; "
                f"{accept_errors} accept-failure log lines, at least 1 s apart, "
                f"{connect_errors} per-connection EMFILE connect warnings")


@test(timeout=90)
def slowloris_1000_do_not_block_a_good_client():
    # 1000 connections each send part of a request head and stall. A
    # well-behaved client must still get through at once, and the stalled
    # ones are cut when timeouts.handshake expires.
    # The handshake timeout leaves room for opening 1000 connections on a
    # loaded machine (under ASan that alone has taken 7 s).
    handshake = 15
    config = {"timeouts": {"handshake": f"{handshake}s"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        base = fd_count(gw.pid)
        slow = []
        partial = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n".encode()
        for i in range(1000):
            s = socket.create_connection((HOST, gw.port), timeout=5)
            s.sendall(partial[: 5 + i % (len(partial) - 5)])
            slow.append(s)
        opened = time.monotonic()
        check(wait_until(lambda: fd_count(gw.pid) >= base + 1000, 10),
              f"wsgate accepted only {fd_count(gw.pid) - base} of 1000 slow connections")
        started = time.monotonic()
        ws = RawWs.connect(gw.port, timeout=5)
        check(echo_ok(ws, "good client"), "the good client's echo")
        took = time.monotonic() - started
        check(took < 2.0, f"good client took {took:.2f}s with 1000 slowloris connections open")
        ws.send_close(1000)
        ws.wait_eof(3)
        ws.close()
        # Every stalled connection is closed (408 or plain close) once the
        # handshake timeout passes.
        check(wait_until(lambda: fd_count(gw.pid) <= base, handshake + 6), "slow connections not cut")
        cut_after = time.monotonic() - opened
        statuses = {}
        for s in slow:
            s.settimeout(2)
            try:
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                key = parse_response(data)[0] or "closed"
            except ConnectionResetError:
                key = "reset"
            except socket.timeout:
                key = "still open"
            statuses[key] = statuses.get(key, 0) + 1
            s.close()
        check("still open" not in statuses, f"slow connections after the cut: {statuses}")
        return f"good client in {took * 1000:.0f} ms; slow ones cut after ~{cut_after:.1f}s: {statuses}"


if __name__ == "__main__":
    main()
