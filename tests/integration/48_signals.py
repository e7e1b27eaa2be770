"""Signals: SIGTERM closes every session with 1001 and exits 0 within the
drain timeout (/healthz says 503 meanwhile), a second stop signal exits at
once, and SIGUSR1 reopens renamed log files."""

import os
import signal
import time
from contextlib import ExitStack

from harness import (HOST, OP_TEXT, Backend, RawWs, Wsgate, admin_status,
                     check, check_eq, free_port, http_get, main,
                     port_is_listening, scrape, test, wait_until, whoami)

SESSIONS = 10


def wait_exit(gw, timeout):
    """(exit code, seconds waited) once the process ends; raises if it does not."""
    started = time.monotonic()
    code = wait_until(lambda: gw.proc.poll() is not None, timeout, interval=0.01)
    check(code, f"wsgate still running {timeout}s after the stop signal: {gw.diagnostics()}")
    return gw.proc.returncode, time.monotonic() - started


@test(timeout=60)
def sigterm_drains_with_1001_and_exits_0():
    """drain_timeout 3s. 10 clients answer the close, one never does (so the
    drain runs its course). After SIGTERM: every client gets close 1001
    "shutdown", so does the back end for each session; the listener stops
    accepting; /healthz answers 503 "draining", /status and wsgate_draining
    say so; the process exits 0 within the drain timeout (+1 s of slack) and logs
    one "shutdown" line per session."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({"admin": f"{HOST}:{admin_port}", "backends": [b1],
                                         "server": {"drain_timeout": "3s"}}))
        clients = [RawWs.connect(gw.port, f"/c{i}") for i in range(SESSIONS)]
        unanswering = RawWs.connect(gw.port, "/unanswering")
        try:
            for ws in clients + [unanswering]:
                ws.send_text("hello")
                check_eq(ws.recv_message(timeout=5), (OP_TEXT, b"hello"), "echo before the stop")
            t0 = time.monotonic()
            gw.signal(signal.SIGTERM)
            for ws in clients:
                check_eq(ws.recv_close(timeout=5), (1001, "shutdown"), "close frame after SIGTERM")
                ws.send_close(1001)
            closes_by = time.monotonic() - t0
            check(wait_until(lambda: not port_is_listening(gw.port), 2), "listener still open after SIGTERM")
            status, _, body = http_get(admin_port, "/healthz")
            check_eq((status, body), (503, b"draining\n"), "/healthz while draining")
            check_eq(admin_status(admin_port)["draining"], True, "/status draining")
            check_eq(scrape(admin_port).get("wsgate_draining"), 1, "wsgate_draining")
            for ws in clients:
                check(ws.wait_eof(5), "TCP close after the close handshake")
            code, waited = wait_exit(gw, 3.5 + 2.0)
            took = time.monotonic() - t0
            check_eq(code, 0, "exit status after SIGTERM")
            check(took <= 4.0, f"exit {took:.2f}s after SIGTERM, drain timeout 3s")
            check_eq(unanswering.recv_close(timeout=1), (1001, "shutdown"), "close frame to the client that never answers the close")
        finally:
            for ws in clients + [unanswering]:
                ws.close()
        entries = gw.access_log_entries(wait_for=SESSIONS + 1)
        check_eq(len(entries), SESSIONS + 1, "access-log lines")
        check_eq({(e["reason"], e["close_code"], e["close_by"]) for e in entries}, {("shutdown", 1001, "proxy")},
                 "reason, close_code, close_by of the sessions")
        backend_codes = [e.get("code") for e in b1.close_events(wait_for=SESSIONS + 1)]
        check_eq(backend_codes, [1001] * (SESSIONS + 1), "close codes the back end received")
        check("stopped" in gw.error_log(), "no 'stopped' line in the error log")
        return (f"{SESSIONS} clients got 1001 within {closes_by:.2f}s; exit 0 after {took:.2f}s "
                f"(one client never answered the close)")


@test(timeout=30)
def sigterm_when_idle_exits_at_once():
    """With no session open, SIGTERM exits 0 well before the drain timeout."""
    with Backend("echo", id="b1") as b1, \
            Wsgate({"backends": [b1], "server": {"drain_timeout": "10s"}}) as gw:
        check_eq(whoami(gw.port), "b1", "a session before the stop")
        gw.signal(signal.SIGTERM)
        code, waited = wait_exit(gw, 2.0)
        check_eq(code, 0, "exit status")
        return f"exit 0 after {waited:.2f}s"


@test(timeout=30)
def second_stop_signal_exits_now():
    """drain_timeout 10s and a client that never answers the close: after
    SIGTERM the process waits; a following SIGINT makes it exit 1 at once."""
    with Backend("echo", id="b1") as b1, \
            Wsgate({"backends": [b1], "server": {"drain_timeout": "10s"}}) as gw:
        unanswering = RawWs.connect(gw.port, "/")
        try:
            since = gw.error_log_offset()
            gw.signal(signal.SIGTERM)
            check(gw.wait_error_log("shutting down", 5, since), "no 'shutting down' line")
            check_eq(unanswering.recv_close(timeout=5), (1001, "shutdown"), "close frame after SIGTERM")
            time.sleep(0.3)
            check(gw.proc.poll() is None, "exited although a close handshake is pending")
            gw.signal(signal.SIGINT)
            code, waited = wait_exit(gw, 1.0)
            check_eq(code, 1, "exit status after the second signal")
            check(wait_until(lambda: "second stop signal" in gw.error_log(), 2),
                  "no 'second stop signal' line")
            return f"exit 1 {waited:.2f}s after the second signal"
        finally:
            unanswering.close()


@test(timeout=30)
def sigusr1_reopens_logs():
    """access.log and error.log are renamed (as logrotate does); SIGUSR1
    makes wsgate write to new files at the old paths: a new session's line
    lands in the new access.log, the renamed one keeps only the old line,
    and later error-log lines go to the new error.log."""
    with Backend("echo", id="b1") as b1, Wsgate({"backends": [b1]}) as gw:
        check_eq(whoami(gw.port, "/before"), "b1", "session before the rotation")
        check_eq(len(gw.access_log_lines(wait_for=1)), 1, "access-log lines before the rotation")
        old_access, old_error = gw.access_path + ".1", gw.error_path + ".1"
        os.rename(gw.access_path, old_access)
        os.rename(gw.error_path, old_error)
        gw.signal(signal.SIGUSR1)
        check(wait_until(lambda: os.path.exists(gw.access_path) and os.path.exists(gw.error_path), 3),
              "new log files not created after SIGUSR1")
        with open(old_error) as f:
            check("reopening logs" in f.read(), "no 'reopening logs' line in the renamed error log")
        check_eq(whoami(gw.port, "/after"), "b1", "session after the rotation")
        lines = gw.access_log_lines(wait_for=1)
        check_eq(len(lines), 1, "lines in the new access.log")
        check('"path":"/after"' in lines[0], f"new access.log line: {lines[0]}")
        with open(old_access) as f:
            old_lines = f.read().splitlines()
        check_eq(len(old_lines), 1, "lines in the renamed access.log")
        check('"path":"/before"' in old_lines[0], f"renamed access.log line: {old_lines[0]}")
        gw.reload()
        check(gw.wait_error_log(r"reloaded .*generation 2", 5), "reload line not in the new error.log")
        with open(old_error) as f:
            check("generation 2" not in f.read(), "reload line went to the renamed error.log")
        return "access and error logs reopened at their paths"


if __name__ == "__main__":
    main()
