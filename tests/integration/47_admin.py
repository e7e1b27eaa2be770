"""Admin endpoint: /metrics is strict Prometheus text whose counters move as
the traffic says, /healthz and /status answer, other paths and methods are
refused."""

from contextlib import ExitStack

from harness import (HOST, OP_CLOSE, OP_TEXT, Backend, RawWs, Wsgate,
                     admin_status, check, check_eq, free_port, http_get, main,
                     parse_prometheus, raw_request, scrape, test)

FAMILIES = {
    "wsgate_connections_active": "gauge",
    "wsgate_connections_accepted_total": "counter",
    "wsgate_connections_refused_total": "counter",
    "wsgate_bytes_total": "counter",
    "wsgate_frames_total": "counter",
    "wsgate_messages_total": "counter",
    "wsgate_handshake_duration_seconds": "histogram",
    "wsgate_sessions_total": "counter",
    "wsgate_closes_total": "counter",
    "wsgate_idle_timeouts_total": "counter",
    "wsgate_heartbeat_timeouts_total": "counter",
    "wsgate_heartbeat_pings_total": "counter",
    "wsgate_drained_sessions_total": "counter",
    "wsgate_empty_connections_total": "counter",
    "wsgate_backend_up": "gauge",
    "wsgate_backend_active_sessions": "gauge",
    "wsgate_health_transitions_total": "counter",
    "wsgate_reloads_total": "counter",
    "wsgate_config_generation": "gauge",
    "wsgate_draining": "gauge",
}

SESSIONS = 6
MESSAGES = 5
SIZE = 100   # payload bytes: a 2-byte frame header (+4 mask bytes from the client)

C2B, B2C = {"direction": "client_to_backend"}, {"direction": "backend_to_client"}


def delta(after, before, name, **labels):
    return after.get(name, **labels) - before.get(name, **labels)


@test(timeout=60)
def metrics_strict_and_counting():
    """Every documented family is declared (HELP and TYPE, the right type)
    and the whole exposition parses strictly. Then 6 sessions echo 5 text
    messages of 100 bytes and close with 1000, one session is closed by the
    back end with 4000, and one plain GET is refused with 426: the counters
    move by exactly that (messages, frames and bytes per direction,
    sessions_total by status, closes_total by code and side, the handshake
    histogram, accepted connections), and the gauges follow open sessions."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({"admin": f"{HOST}:{admin_port}", "backends": [b1]}))
        listener = f"{HOST}:{gw.port}"
        before = scrape(admin_port)
        for name, kind in FAMILIES.items():
            check_eq(before.types.get(name), kind, f"TYPE of {name}")
            check(before.helps.get(name), f"HELP of {name}")
        check_eq(before.get("wsgate_config_generation"), 1, "wsgate_config_generation")
        check_eq(before.get("wsgate_draining"), 0, "wsgate_draining")
        check_eq(before.get("wsgate_backend_up", pool="main", backend=b1.address), 1, "wsgate_backend_up")
        check_eq(before.get("wsgate_connections_active", listener=listener), 0, "connections_active at start")

        clients = [RawWs.connect(gw.port, f"/m{i}") for i in range(SESSIONS)]
        try:
            for i, ws in enumerate(clients):
                for n in range(MESSAGES):
                    text = f"{i}:{n}:".ljust(SIZE, "x")
                    ws.send_text(text)
                    check_eq(ws.recv_message(timeout=5), (OP_TEXT, text.encode()), "echo")
            during = scrape(admin_port)
            check_eq(during.get("wsgate_backend_active_sessions", pool="main", backend=b1.address), SESSIONS,
                     "wsgate_backend_active_sessions with 6 sessions open")
            check_eq(during.get("wsgate_connections_active", listener=listener), SESSIONS,
                     "wsgate_connections_active with 6 sessions open")
            check_eq(admin_status(admin_port)["connections"], SESSIONS, "/status connections")
            for ws in clients:
                ws.send_close(1000)
                check_eq(ws.recv_close(timeout=5), (1000, ""), "close reply")
                check(ws.wait_eof(5), "TCP close after the close handshake")
        finally:
            for ws in clients:
                ws.close()
        by_backend = RawWs.connect(gw.port, "/b")
        try:
            by_backend.send_text("close:4000")
            reply = by_backend.recv_message(timeout=5)
            check_eq(reply and reply[0], OP_CLOSE, "close frame from the back end")
            by_backend.send_close(4000)
            by_backend.wait_eof(5)
        finally:
            by_backend.close()
        # A refusal of wsgate's own (plain GETs are proxied): an upgrade of version 8.
        status, _, _ = raw_request(gw.port, (f"GET / HTTP/1.1\r\nHost: {listener}\r\nUpgrade: websocket\r\n"
                                             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                             "Sec-WebSocket-Version: 8\r\n\r\n").encode())
        check_eq(status, 426, "version 8 upgrade")
        gw.access_log_entries(wait_for=SESSIONS + 2)

        after = scrape(admin_port)
        n = SESSIONS * MESSAGES
        expected = [
            (("wsgate_messages_total",), C2B, n + 1),    # + "close:4000"
            (("wsgate_messages_total",), B2C, n),
            (("wsgate_frames_total",), C2B, n + 1),
            (("wsgate_frames_total",), B2C, n),
            (("wsgate_bytes_total",), C2B, n * (2 + 4 + SIZE) + (2 + 4 + len("close:4000"))),
            (("wsgate_bytes_total",), B2C, n * (2 + SIZE)),
            (("wsgate_sessions_total",), {"pool": "main", "backend": b1.address, "status": "101"}, SESSIONS + 1),
            (("wsgate_closes_total",), {"code": "1000", "by": "client"}, SESSIONS),
            (("wsgate_closes_total",), {"code": "4000", "by": "backend"}, 1),
            (("wsgate_handshake_duration_seconds_count",), {}, SESSIONS + 1),
            (("wsgate_connections_accepted_total",), {}, SESSIONS + 2),
        ]
        for (name,), labels, want in expected:
            check_eq(delta(after, before, name, **labels), want, f"change of {name}{labels}")
        check_eq(after.total("wsgate_sessions_total", status="426")
                 - before.total("wsgate_sessions_total", status="426"), 1, "sessions_total with status 426")
        check(after.get("wsgate_handshake_duration_seconds_sum") > 0, "handshake duration sum")
        check_eq(after.get("wsgate_backend_active_sessions", pool="main", backend=b1.address), 0,
                 "wsgate_backend_active_sessions after the sessions")
        check_eq(after.get("wsgate_connections_active", listener=listener), 0,
                 "wsgate_connections_active after the sessions")
        return (f"{len(after.samples)} samples in {len(after.types)} families; "
                f"bytes c2b +{delta(after, before, 'wsgate_bytes_total', **C2B):.0f}, "
                f"b2c +{delta(after, before, 'wsgate_bytes_total', **B2C):.0f}")


@test(timeout=30)
def healthz_status_and_refusals():
    """/healthz is 200 "ok"; /status is JSON with the generation, draining,
    connections, reloads and each back end's id, address, up flag, state and
    active sessions; HEAD has no body; unknown paths are 404 and POST 405."""
    with ExitStack() as stack:
        b1 = stack.enter_context(Backend("echo", id="b1"))
        b2 = stack.enter_context(Backend("echo", id="b2"))
        admin_port = free_port()
        gw = stack.enter_context(Wsgate({
            "admin": f"{HOST}:{admin_port}",
            "pools": [{"name": "main", "backends": [{"backend": b1, "id": "one"}, b2]}]}))
        status, headers, body = http_get(admin_port, "/healthz")
        check_eq((status, body), (200, b"ok\n"), "/healthz")
        status, headers, body = http_get(admin_port, "/healthz", method="HEAD")
        check_eq((status, body, headers.get("content-length")), (200, b"", "3"), "HEAD /healthz")
        ws = RawWs.connect(gw.port, "/")
        try:
            ws.send_text("whoami")
            owner = ws.recv_message(timeout=5)[1].decode().removeprefix("id:")
            doc = admin_status(admin_port)
        finally:
            ws.close()
        check_eq({k: doc.get(k) for k in ("generation", "draining", "connections", "reloads")},
                 {"generation": 1, "draining": False, "connections": 1,
                  "reloads": {"success": 0, "failure": 0}}, "/status fields")
        check_eq([p["name"] for p in doc["pools"]], ["main"], "/status pools")
        backends = doc["pools"][0]["backends"]
        active = {"b1": "one", "b2": b2.address}[owner]
        check_eq(backends, [
            {"id": "one", "address": b1.address, "up": True, "state": "up", "active_sessions": int(active == "one")},
            {"id": b2.address, "address": b2.address, "up": True, "state": "up",
             "active_sessions": int(active == b2.address)},
        ], "/status back ends")
        status, _, _ = http_get(admin_port, "/nope")
        check_eq(status, 404, "GET /nope")
        status, _, _ = http_get(admin_port, "/metrics", method="POST")
        check_eq(status, 405, "POST /metrics")
        status, _, _ = raw_request(admin_port, b"BROKEN\r\n\r\n")
        check_eq(status, 400, "malformed request to the admin port")
        check_eq(http_get(admin_port, "/healthz")[0], 200, "/healthz after the refusals")
        return f"session on {owner}; /status: {len(backends)} back ends"


@test(timeout=10)
def prometheus_parser_is_strict():
    """The parser used above rejects what a scraper would: it must not pass
    a broken exposition (so the checks above can fail)."""
    good = ('# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 3\n'
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="0.1"} 1\nh_bucket{le="+Inf"} 2\n'
            'h_sum 0.5\nh_count 2\n')
    parsed = parse_prometheus(good)
    check_eq(parsed.get("a_total", x=1), 3, "good exposition")
    bad = {
        "no TYPE": "a 1\n",
        "bad label": '# TYPE a gauge\na{x=1} 1\n',
        "not a number": "# TYPE a gauge\na one\n",
        "no newline at end": "# TYPE a gauge\na 1",
        "TYPE twice": "# TYPE a gauge\n# TYPE a gauge\na 1\n",
        "family split": "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 2\n",
        "series repeated": "# TYPE a gauge\na 1\na 2\n",
        "negative counter": "# TYPE a counter\na -1\n",
        "buckets not cumulative": good.replace('le="+Inf"} 2', 'le="+Inf"} 0').replace("h_count 2", "h_count 0"),
        "no +Inf bucket": good.replace('h_bucket{le="+Inf"} 2\n', ""),
        "count != +Inf": good.replace("h_count 2", "h_count 3"),
        "unknown TYPE": "# TYPE a thing\na 1\n",
        "blank line": "# TYPE a gauge\n\na 1\n",
    }
    for what, text in bad.items():
        try:
            parse_prometheus(text)
        except AssertionError:
            continue
        raise AssertionError(f"parser accepted: {what}")
    return f"{len(bad)} broken expositions rejected"


if __name__ == "__main__":
    main()
