"""Access log: one entry per session or refused request, every field with
the right type and value; the text format carries the same fields."""

import json
import re
import time
from datetime import datetime, timezone

from harness import (HOST, Backend, RawWs, Wsgate, check, check_eq,
                     main, raw_exchange, test, upgrade_head)

NUMBER = (int, float)
FIELDS = {"time": str, "request_id": str, "client": str, "proto": str, "method": str,
          "host": str, "path": str, "status": int, "pool": str, "backend": str,
          "key_fallback": bool, "connect_ms": NUMBER, "duration_ms": NUMBER,
          "bytes_in": int, "bytes_out": int, "messages_in": int,
          "messages_out": int, "close_code": int, "close_by": str, "reason": str}


def check_types(entry):
    missing = [f for f in FIELDS if f not in entry]
    check(not missing, f"fields missing: {missing} in {entry}")
    for name, kind in FIELDS.items():
        value = entry[name]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        check(ok, f"{name} has type {type(value).__name__}: {value!r}")
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]),
          f"time not RFC 3339 UTC with ms: {entry['time']!r}")
    logged = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    skew = abs((datetime.now(timezone.utc) - logged).total_seconds())
    check(skew < 60, f"time {entry['time']} is {skew:.0f}s away from now")
    check(entry["duration_ms"] >= 0, f"duration_ms {entry['duration_ms']}")
    # A request refused before any connect may log -1 ("no connect").
    low = -1 if entry["backend"] == "" else 0
    check(entry["connect_ms"] >= low, f"connect_ms {entry['connect_ms']} with backend "
          f"{entry['backend']!r}")
    check(re.fullmatch(r"127\.0\.0\.1:\d+", entry["client"]), f"client {entry['client']!r}")


def only_entry(gw, what):
    entries = gw.access_log_entries(wait_for=1, timeout=5)
    check_eq(len(entries), 1, f"{what}: access-log entries")
    check_types(entries[0])
    return entries[0]


def run_session(port, path="/", extra=(), texts=("hello",)):
    """One raw session: sends <texts>, reads the echoes, closes with 1000.
    Returns the client (its byte counters) and its local port."""
    ws = RawWs.connect(port, path, extra=extra)
    local_port = ws.sock.getsockname()[1]
    answers = []
    for text in texts:
        ws.send_text(text)
        answers.append(ws.recv_message(timeout=5)[1])
    ws.send_close(1000, "done")
    ws.recv_close(timeout=5)
    check(ws.wait_eof(6), "TCP not closed after the close handshake")
    ws.close()
    return ws, local_port, answers


@test
def normal_session_entry():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        started = time.monotonic()
        ws, local_port, answers = run_session(gw.port, "/chat", texts=("headers", "hello"))
        took_ms = (time.monotonic() - started) * 1000
        seen = json.loads(answers[0])
        e = only_entry(gw, "session")
        expected = {"request_id": seen.get("x-request-id"), "client": f"{HOST}:{local_port}",
                    "method": "GET", "host": f"{HOST}:{gw.port}", "path": "/chat",
                    "status": 101, "pool": "main", "backend": b.address,
                    "key_fallback": False, "bytes_in": ws.bytes_sent,
                    "bytes_out": ws.bytes_received, "messages_in": 2, "messages_out": 2,
                    "close_code": 1000, "close_by": "client", "reason": "client closed"}
        for name, value in expected.items():
            check_eq(e[name], value, name)
        check(re.fullmatch(r"[0-9a-f]{32}", e["request_id"]), f"request_id {e['request_id']!r}")
        check(e["connect_ms"] < 1000, f"connect_ms {e['connect_ms']}")
        check(e["duration_ms"] <= took_ms + 1000, f"duration_ms {e['duration_ms']} > {took_ms:.0f}")


@test
def client_request_id_logged():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        run_session(gw.port, extra=[("X-Request-Id", "client-id-7")])
        check_eq(only_entry(gw, "session")["request_id"], "client-id-7", "request_id")


def refused_entry(config, request, status, what):
    with Backend("echo", id="b1") as b:
        with Wsgate({"backends": [b], **config}) as gw:
            request = request.replace(b"@HOST@", f"{HOST}:{gw.port}".encode())
            response = raw_exchange(gw.port, request)
            check(response.startswith(f"HTTP/1.1 {status} ".encode()),
                  f"{what}: response {response[:40]!r}")
            e = only_entry(gw, what)
        check_eq(len(b.events("open")), 0, f"{what}: sessions at the back end")
    expected = {"status": status, "method": "GET", "backend": "", "messages_in": 0,
                "messages_out": 0, "close_code": 0,
                "bytes_in": len(request), "bytes_out": len(response)}
    for name, value in expected.items():
        check_eq(e[name], value, f"{what}: {name}")
    # No close frame was exchanged; the proxy did end the connection.
    check(e["close_by"] in ("", "proxy"), f"{what}: close_by {e['close_by']!r}")
    check(e["reason"], f"{what}: empty reason")
    return e


@test
def refused_404_entry():
    e = refused_entry({"routes": [{"path_prefix": "/ws", "pool": "main"}]},
                      upgrade_head("/other", "@HOST@"), 404, "no route")
    check_eq(e["path"], "/other", "path")
    check_eq(e["pool"], "", "pool")


VERSION_8 = (b"GET /plain HTTP/1.1\r\nHost: @HOST@\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")


@test
def refused_426_entry():
    # A plain GET is proxied now (90_http_proxy.py); an upgrade of the wrong
    # version is still refused with 426.
    e = refused_entry({}, VERSION_8, 426, "version 8")
    check_eq(e["path"], "/plain", "path")


@test
def idle_timeout_entry():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "timeouts": {"idle": "1s"}}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("one")
        ws.recv_message(timeout=5)
        check_eq(ws.recv_close(timeout=5), (1001, "idle timeout"), "close to the client")
        ws.send_close(1001)
        ws.wait_eof(6)
        e = only_entry(gw, "idle")
        for name, value in {"status": 101, "close_code": 1001, "close_by": "proxy",
                            "reason": "idle timeout", "messages_in": 1,
                            "messages_out": 1}.items():
            check_eq(e[name], value, name)
        check(e["duration_ms"] >= 800, f"duration_ms {e['duration_ms']} < idle timeout")


@test
def backend_close_entry():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("close:4002")
        ws.recv_close(timeout=5)
        ws.send_close(4002)
        ws.wait_eof(6)
        e = only_entry(gw, "backend close")
        for name, value in {"close_code": 4002, "close_by": "backend",
                            "reason": "backend closed", "messages_in": 1,
                            "messages_out": 0}.items():
            check_eq(e[name], value, name)


@test
def backend_reset_entry():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("x")
        ws.recv_message(timeout=5)
        b.kill()
        ws.recv_close(timeout=5)
        ws.close()
        e = only_entry(gw, "backend reset")
        check_eq(e["close_code"], 1014, "close_code")
        check_eq(e["reason"], "backend reset", "reason")


@test
def key_fallback_entry():
    with Backend("echo", id="b1") as b, \
            Wsgate({"pools": [{"name": "main", "hash": "header:X-User",
                               "backends": [b]}]}) as gw:
        run_session(gw.port)
        first = gw.access_log_entries(wait_for=1)
        run_session(gw.port, extra=[("X-User", "alice")])
        entries = gw.access_log_entries(wait_for=2)
        check_eq(len(first), 1, "entries after the first session")
        check_eq([e["key_fallback"] for e in entries], [True, False],
                 "key_fallback without, then with X-User")


@test
def text_format_has_same_fields():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "log": {"format": "text"}}) as gw:
        run_session(gw.port, "/text")
        raw_exchange(gw.port, VERSION_8.replace(b"@HOST@", f"{HOST}:{gw.port}".encode()))
        lines = gw.access_log_lines(wait_for=2)
        check_eq(len(lines), 2, "text lines for one session and one refusal")
        for line in lines:
            try:
                check(not isinstance(json.loads(line), dict), f"text format wrote JSON: {line}")
            except ValueError:
                pass
            # The time may lead the line unnamed, as in most text logs.
            named = line if not re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z ", line) else "time " + line
            missing = [f for f in FIELDS if not re.search(r"\b" + f + r"\b", named)]
            check(not missing, f"fields missing {missing} in {line!r}")
        check("101" in lines[0] and "426" in lines[1], f"statuses not in lines: {lines}")


if __name__ == "__main__":
    main()
