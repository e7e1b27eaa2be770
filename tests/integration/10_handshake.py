"""Handshake: upgrade relay, forwarded headers, refusals and back-end
failures (RFC 6455 section 4, RFC 9112 section 2-5)."""

import json
import re
import socket
import time

from harness import (HOST, Backend, RawWs, Wsgate, accept_key, check,
                     check_between, check_eq, free_port, garbage, main, new_key,
                     parse_head, raw_request, read_head, recorder, reject,
                     run_async, silent_accept, test, upgrade_head, wrong_accept,
                     ws_connect)


def ask(port, command, path="/", **kwargs):
    """Sends one text <command> through the gateway and returns the answer."""
    async def go():
        async with ws_connect(port, path, **kwargs) as ws:
            await ws.send(command)
            return await ws.recv()
    return run_async(go(), timeout=10)


def check_refusal(resp, status, what):
    got_status, headers, _ = resp
    check_eq(got_status, status, f"{what}: status")
    check_eq(headers.get("connection", "").lower(), "close", f"{what}: Connection header")


@test
def upgrade_through_gateway():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        check_eq(ask(gw.port, "whoami"), "id:b1", "answer to whoami")
        check_eq(ask(gw.port, "hello"), "hello", "echo")


@test
def backend_accept_and_headers_relayed():
    with recorder(extra=[("X-Backend", "rec-1")]) as rb, Wsgate({"backends": [rb]}) as gw:
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        key = new_key()
        sock.sendall(upgrade_head("/", f"{HOST}:{gw.port}", key))
        head, _ = read_head(sock)
        sock.close()
        status_line, headers = parse_head(head)
        check_eq(status_line[1], "101", "status")
        check_eq(headers.get("sec-websocket-accept"), accept_key(key), "Sec-WebSocket-Accept")
        check_eq(headers.get("x-backend"), "rec-1", "back end's extra header")
        check_eq(headers.get("upgrade", "").lower(), "websocket", "Upgrade")


@test
def subprotocol_passes_through():
    with Backend("echo", id="b1", subprotocols=["chat"]) as b, \
            Wsgate({"backends": [b]}) as gw:
        async def go():
            async with ws_connect(gw.port, subprotocols=["superchat", "chat"]) as ws:
                await ws.send("headers")
                seen = json.loads(await ws.recv())
                return ws.subprotocol, seen
        chosen, seen = run_async(go())
        check_eq(seen.get("sec-websocket-protocol"), "superchat, chat",
                 "Sec-WebSocket-Protocol seen by the back end")
        check_eq(chosen, "chat", "subprotocol answered to the client")


@test
def forwarded_headers_added():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        seen = json.loads(ask(gw.port, "headers", "/fwd"))
        check_eq(seen.get("x-forwarded-for"), "127.0.0.1", "X-Forwarded-For")
        check_eq(seen.get("x-forwarded-proto"), "http", "X-Forwarded-Proto")
        check_eq(seen.get("x-forwarded-host"), f"127.0.0.1:{gw.port}", "X-Forwarded-Host")
        check_eq(seen.get("host"), f"127.0.0.1:{gw.port}", "Host forwarded unchanged")
        check(re.fullmatch(r"[0-9a-f]{32}", seen.get("x-request-id", "")),
              f"generated X-Request-Id not 32 hex chars: {seen.get('x-request-id')!r}")
        other = json.loads(ask(gw.port, "headers"))
        check(other.get("x-request-id") != seen.get("x-request-id"),
              "two sessions got the same X-Request-Id")


@test
def client_request_id_and_forwarded_for_kept():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        seen = json.loads(ask(gw.port, "headers", extra_headers={
            "X-Request-Id": "client-id-42", "X-Forwarded-For": "10.1.2.3"}))
        check_eq(seen.get("x-request-id"), "client-id-42", "X-Request-Id")
        check_eq(seen.get("x-forwarded-for"), "10.1.2.3, 127.0.0.1", "X-Forwarded-For")


@test
def malformed_head_400():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        check_refusal(raw_request(gw.port, b"GARBAGE\r\n\r\n"), 400, "no spaces")
        check_refusal(raw_request(gw.port, b"GET / HTTP/1.1\r\nHost 127.0.0.1\r\n"
                                  b"Upgrade: websocket\r\n\r\n"), 400, "header without colon")
        check_refusal(raw_request(gw.port, upgrade_head(extra=[("Bad Name", "v")])),
                      400, "space in field name")
        check_eq(len(b.events("open")), 0, "back end connections")


@test
def missing_key_400():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        head = upgrade_head(host=f"{HOST}:{gw.port}", omit=("sec-websocket-key",))
        check_refusal(raw_request(gw.port, head), 400, "missing key")
        head = upgrade_head(host=f"{HOST}:{gw.port}", key="dG9vc2hvcnQ=")
        check_refusal(raw_request(gw.port, head), 400, "key of 8 bytes")


@test
def version_8_426():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        resp = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}", version="8"))
        check_refusal(resp, 426, "version 8")
        check_eq(resp[1].get("sec-websocket-version"), "13", "Sec-WebSocket-Version")


@test
def plain_get_proxied():
    # Not an upgrade: wsgate proxies it as plain HTTP (90_http_proxy.py), and
    # this back end, a WebSocket server, answers 426 itself.
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        resp = raw_request(gw.port, f"GET / HTTP/1.1\r\nHost: {HOST}:{gw.port}\r\nConnection: close\r\n\r\n".encode())
        check_refusal(resp, 426, "plain GET")
        check_eq(resp[1].get("upgrade", "").lower(), "websocket", "Upgrade header")
        check("websockets" in resp[1].get("server", ""), f"answer not from the back end: {resp[1]}")


@test
def header_too_large_431():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        head = upgrade_head(host=f"{HOST}:{gw.port}", extra=[("X-Big", "a" * 20480)])
        check_refusal(raw_request(gw.port, head), 431, "20 KiB header")


@test
def slowloris_cut_after_handshake_timeout():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "timeouts": {"handshake": "2s"}}) as gw:
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        data = upgrade_head(host=f"{HOST}:{gw.port}")
        started = time.monotonic()
        received, cut_at = b"", None
        try:
            for i in range(min(len(data) - 4, 10)):
                sock.sendall(data[i:i + 1])
                sock.settimeout(1.0)
                try:
                    chunk = sock.recv(4096)
                except socket.timeout:
                    continue
                received += chunk
                if not chunk:
                    cut_at = time.monotonic() - started
                    break
        except (BrokenPipeError, ConnectionResetError):
            cut_at = time.monotonic() - started
        finally:
            sock.close()
        check(cut_at is not None, "connection still open after 10 s of a slow head")
        check_between(cut_at, 1.5, 3.5, "seconds until the cut")
        status = received.split(b" ", 2)[1] if received.count(b" ") >= 2 else b""
        check(received == b"" or status == b"408",
              f"only nothing or a 408 may be sent to a slow client: {received[:80]!r}")


@test
def no_route_404():
    config = {"backends": [], "routes": [{"path_prefix": "/ws", "pool": "main"}]}
    with Backend("echo", id="b1") as b:
        config["backends"] = [b]
        with Wsgate(config) as gw:
            check_refusal(raw_request(gw.port, upgrade_head("/other", f"{HOST}:{gw.port}")),
                          404, "/other")
            check_eq(ask(gw.port, "whoami", "/ws/chat"), "id:b1", "routed /ws/chat")


@test
def backend_refusal_relayed():
    with reject(403, b"go away\n") as rb, Wsgate({"backends": [rb]}) as gw:
        status, headers, body = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}"))
        check_eq(status, 403, "status")
        check_eq(body, b"go away\n", "body")
        check_eq(headers.get("x-backend"), "raw", "back end's header")
        check_eq(len(rb.heads), 1, "requests seen by the back end")


@test
def wrong_accept_502():
    with wrong_accept() as rb, Wsgate({"backends": [rb]}) as gw:
        check_refusal(raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}")),
                      502, "wrong Sec-WebSocket-Accept")


@test
def garbage_answer_502():
    with garbage() as rb, Wsgate({"backends": [rb]}) as gw:
        check_refusal(raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}")),
                      502, "non-HTTP answer")


@test
def all_backends_down_502():
    down = [f"{HOST}:{free_port()}", f"{HOST}:{free_port()}"]
    with Wsgate({"backends": down, "timeouts": {"connect": "1s"}}) as gw:
        started = time.monotonic()
        check_refusal(raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}")),
                      502, "no back end up")
        check(time.monotonic() - started < 3, "refused connects took longer than 3 s")


@test
def failover_to_second_backend():
    down = f"{HOST}:{free_port()}"
    with Backend("echo", id="up") as b:
        config = {"pools": [{"name": "main", "hash": "header:X-Key",
                             "backends": [down, b]}]}
        with Wsgate(config) as gw:
            # About half of the keys have the closed port first in their
            # failover order; every one must still reach the live back end.
            for i in range(12):
                got = ask(gw.port, "whoami", extra_headers={"X-Key": f"key-{i}"})
                check_eq(got, "id:up", f"key-{i}")


@test
def silent_backend_504():
    with silent_accept() as rb, \
            Wsgate({"backends": [rb], "timeouts": {"handshake": "2s"}}) as gw:
        started = time.monotonic()
        resp = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}"), timeout=8)
        check_refusal(resp, 504, "silent back end")
        check_between(time.monotonic() - started, 1.5, 4.0, "seconds until the 504")


@test
def max_connections_per_ip_429():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "limits": {"max_connections_per_ip": 1}}) as gw:
        first = RawWs.connect(gw.port)
        try:
            check_refusal(raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}")),
                          429, "second connection from 127.0.0.1")
        finally:
            first.close()


@test
def max_connections_503():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "server": {"max_connections": 1}}) as gw:
        first = RawWs.connect(gw.port)
        try:
            resp = raw_request(gw.port, upgrade_head(host=f"{HOST}:{gw.port}"))
            check_eq(resp[0], 503, "status over max_connections")
        finally:
            first.close()


if __name__ == "__main__":
    main()
