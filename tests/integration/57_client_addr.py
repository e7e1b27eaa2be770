"""Client addresses: PROXY protocol v1/v2 from an L4 balancer (before plain
HTTP or before TLS), X-Forwarded-For from trusted proxies, and the
per-address limits (connections and handshake rate -> 429). With hash = "ip" the resolved client address is the
key, so a client keeps its back end whichever way its address arrives."""

import json
import socket
import ssl
import time
from contextlib import ExitStack

from harness import (HOST, Backend, HarnessError, Wsgate,
                     accept_key, check, check_between, check_eq, free_port,
                     main, new_key, new_tmpdir, parse_head, parse_response,
                     raw_request, read_head, test, upgrade_head, wait_until)
from tlsutil import (PROXY_V2_SIGNATURE, Ca, ask_backend, client_context, converse,
                     gateway_config, proxy_v1, proxy_v2, raw_upgrade)


def three_backends(stack):
    return [stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3)]


def entries_for(gw, predicate, count, timeout=5.0):
    """Access-log entries matching <predicate>, waiting for <count> of them."""
    found = []

    def enough():
        found[:] = [e for e in gw.access_log_entries(wait_for=0, timeout=0) if predicate(e)]
        return len(found) >= count
    wait_until(enough, timeout)
    return found


@test
def proxy_v1_and_v2_source_used():
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([{"listen": f"{HOST}:@PORT@", "proxy_protocol": True}],
                                  [{"name": "main", "backends": [b]}])) as gw:
        cases = [("v1", proxy_v1("203.0.113.7", 5555, HOST, gw.port), "203.0.113.7:5555"),
                 ("v2", proxy_v2("198.51.100.20", 6000, HOST, gw.port), "198.51.100.20:6000")]
        for what, header, client in cases:
            seen = json.loads(ask_backend(gw.port, "headers", prefix=header))
            check_eq(seen.get("x-forwarded-for"), client.split(":")[0], f"PROXY {what}: X-Forwarded-For")
            found = entries_for(gw, lambda e: e["client"] == client, 1)
            check(found and found[0]["status"] == 101,
                  f"PROXY {what}: no access-log line with client {client}: "
                  f"{gw.access_log_entries(wait_for=0)}")
        # v1 "UNKNOWN" and v2 LOCAL (health checks of the balancer itself):
        # the TCP peer stays the client.
        local = PROXY_V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
        for what, header in (("v1 UNKNOWN", b"PROXY UNKNOWN\r\n"), ("v2 LOCAL", local)):
            seen = json.loads(ask_backend(gw.port, "headers", prefix=header))
            check_eq(seen.get("x-forwarded-for"), HOST, f"PROXY {what}: X-Forwarded-For")
        # A header split over several TCP segments is reassembled.
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        try:
            header = proxy_v2("192.0.2.44", 7000, HOST, gw.port)
            for i in range(0, len(header), 5):
                sock.sendall(header[i:i + 5])
                time.sleep(0.02)
            sock.sendall(upgrade_head("/", f"{HOST}:{gw.port}"))
            data = sock.recv(4096)
            check(data.startswith(b"HTTP/1.1 101"), f"split v2 header: answer {data[:60]!r}")
        finally:
            sock.close()
        check(entries_for(gw, lambda e: e["client"] == "192.0.2.44:7000", 1),
              "split v2 header: no access-log line with client 192.0.2.44:7000")


@test
def proxy_garbage_closed_without_answer():
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([{"listen": f"{HOST}:@PORT@", "proxy_protocol": True}],
                                  [{"name": "main", "backends": [b]}])) as gw:
        head = upgrade_head("/", f"{HOST}:{gw.port}")
        bad = [("no PROXY header", b""),
               ("garbage line", b"PROXY BOGUS whatever\r\n"),
               ("v1 bad address", b"PROXY TCP4 203.0.113.999 127.0.0.1 5555 80\r\n"),
               ("v1 without CRLF", b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80" + b"x" * 120),
               ("v2 bad version", PROXY_V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12)),
               ("v2 short address block", PROXY_V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4))]
        for what, prefix in bad:
            try:
                data = raw_request(gw.port, prefix + head, timeout=5)
            except OSError as e:
                raise AssertionError(f"{what}: connection not closed ({e})")
            check_eq(data, (0, {}, b""), f"{what}: bytes answered")
        check_eq(b.events("open"), [], "back-end sessions opened by bad PROXY headers")
        logged = wait_until(lambda: gw.error_log().count("bad PROXY header") >= len(bad), 5)
        check(logged, f"'bad PROXY header' lines: {gw.error_log().count('bad PROXY header')} "
                      f"of {len(bad)}")
        return f"{len(bad)} bad headers closed silently"


@test(timeout=60)
def hash_uses_real_address():
    """One source address maps to one back end whether it arrives as the
    TCP peer, in a PROXY v1 or v2 header, or in X-Forwarded-For from a
    trusted proxy."""
    with ExitStack() as stack:
        backends = three_backends(stack)
        proxy_port, trusted_port = free_port(), free_port()
        gw = stack.enter_context(Wsgate(gateway_config(
            [{"listen": f"{HOST}:@PORT@"},
             {"listen": f"{HOST}:{proxy_port}", "proxy_protocol": True},
             {"listen": f"{HOST}:{trusted_port}", "trusted_proxies": ["127.0.0.1/32"]}],
            [{"name": "main", "hash": "ip", "backends": backends}])))
        check(wait_until(lambda: all(_listening(p) for p in (proxy_port, trusted_port)), 5),
              "extra listeners not bound")
        mapping = {}
        for k in range(2, 32):
            addr = f"127.0.0.{k}"
            ways = {
                "tcp": ask_backend(gw.port, source=addr),
                "v1": ask_backend(proxy_port, prefix=proxy_v1(addr, 40000 + k, HOST, proxy_port)),
                "v2": ask_backend(proxy_port, prefix=proxy_v2(addr, 40000 + k, HOST, proxy_port)),
                "xff": ask_backend(trusted_port, extra=[("X-Forwarded-For", addr)]),
            }
            check_eq(len(set(ways.values())), 1, f"{addr} by way of arrival {ways}")
            mapping[addr] = ways["tcp"]
        check(len(set(mapping.values())) >= 2, f"30 addresses all went to {set(mapping.values())}")
        # Determinism: 10 connections each for two PROXY sources.
        for addr in ("127.0.0.2", "127.0.0.3"):
            for version, make in (("v1", proxy_v1), ("v2", proxy_v2)):
                ids = {ask_backend(proxy_port, prefix=make(addr, 50000 + i, HOST, proxy_port))
                       for i in range(10)}
                check_eq(ids, {mapping[addr]}, f"PROXY {version} {addr} over 10 connections")
        counts = {i: list(mapping.values()).count(i) for i in set(mapping.values())}
        return f"30 addresses x 4 arrival ways agree; spread {counts}"


def tls_after_proxy(port, header, ctx, split=False):
    """A TLS socket (SNI gw.test) to 127.0.0.1:<port> whose first bytes were
    the cleartext PROXY <header>, as an L4 balancer sends them. By default
    the header and the ClientHello leave in one TCP segment (TCP_CORK), so
    wsgate must stop reading exactly at the header's end; <split> sends the
    header in 5-byte pieces first."""
    sock = socket.create_connection((HOST, port), timeout=5)
    try:
        if split:
            for i in range(0, len(header), 5):
                sock.sendall(header[i:i + 5])
                time.sleep(0.02)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            sock.sendall(header)
        # The ClientHello joins the corked header; the kernel sends both
        # together at the latest 200 ms later, while the handshake waits.
        tls = ctx.wrap_socket(sock, server_hostname="gw.test")
    except BaseException:
        sock.close()
        raise
    tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    return tls


def proxy_tls_listener():
    """A throwaway CA and a certificate for gw.test: (client context, a
    PROXY protocol + TLS listener table on the gateway's port)."""
    ca = Ca(new_tmpdir("pki"))
    cert, key = ca.issue("gw.test", dns=["gw.test"])
    listener = {"listen": f"{HOST}:@PORT@", "proxy_protocol": True, "tls": {"cert": cert, "key": key}}
    return client_context(ca.cert), listener


def ask_over(sock, port, command):
    """Upgrades on the connected <sock>, sends the text <command>, returns
    the back end's answer and closes the session cleanly."""
    key = new_key()
    sock.sendall(upgrade_head("/", f"{HOST}:{port}", key))
    head, leftover = read_head(sock, 5)
    status_line, headers = parse_head(head)
    if status_line[1] != "101" or headers.get("sec-websocket-accept") != accept_key(key):
        raise HarnessError(f"handshake answered {head[:80]!r}")
    return converse(sock, leftover, command)


def ask_tls_after_proxy(port, header, ctx, command="whoami", split=False):
    sock = tls_after_proxy(port, header, ctx, split)
    try:
        return ask_over(sock, port, command)
    finally:
        sock.close()


@test(timeout=60)
def proxy_protocol_before_tls():
    """A listener with proxy_protocol and [listener.tls]: the PROXY header
    comes in cleartext, then TLS. The header's source is the client for
    X-Forwarded-For, the access log and hash = "ip" (the same back end as
    the same source gets through a plain PROXY listener)."""
    ctx, listener = proxy_tls_listener()
    with ExitStack() as stack:
        backends = three_backends(stack)
        plain_port = free_port()
        gw = stack.enter_context(Wsgate(gateway_config(
            [listener, {"listen": f"{HOST}:{plain_port}", "proxy_protocol": True}],
            [{"name": "main", "hash": "ip", "backends": backends}])))
        check(wait_until(lambda: _listening(plain_port), 5), "plain PROXY listener not bound")
        cases = [("v1", proxy_v1("203.0.113.7", 5555, HOST, gw.port), "203.0.113.7:5555", False),
                 ("v2", proxy_v2("198.51.100.20", 6000, HOST, gw.port), "198.51.100.20:6000", False),
                 ("v2 split", proxy_v2("192.0.2.44", 7000, HOST, gw.port), "192.0.2.44:7000", True)]
        for what, header, client, split in cases:
            seen = json.loads(ask_tls_after_proxy(gw.port, header, ctx, "headers", split=split))
            check_eq(seen.get("x-forwarded-for"), client.split(":")[0], f"PROXY {what} + TLS: X-Forwarded-For")
            check_eq(seen.get("x-forwarded-proto"), "https", f"PROXY {what} + TLS: X-Forwarded-Proto")
            found = entries_for(gw, lambda e: e["client"] == client, 1)
            check(found and found[0]["status"] == 101,
                  f"PROXY {what} + TLS: no access-log line with client {client}: "
                  f"{gw.access_log_entries(wait_for=0)}")
        mapping = {}
        for k in range(2, 14):
            addr = f"127.0.0.{k}"
            via_tls = {ask_tls_after_proxy(gw.port, make(addr, 40000 + k, HOST, gw.port), ctx)
                       for make in (proxy_v1, proxy_v2)}
            plain = ask_backend(plain_port, prefix=proxy_v1(addr, 40000 + k, HOST, plain_port))
            check_eq(via_tls, {plain}, f"{addr}: back end over PROXY + TLS vs plain PROXY")
            mapping[addr] = plain
        check(len(set(mapping.values())) >= 2, f"12 addresses all went to {set(mapping.values())}")
        return f"v1, v2 and a split v2 header before TLS; 12 addresses hash alike; spread {sorted(mapping.values())}"


@test
def proxy_protocol_before_tls_bad_header_closed():
    """On a PROXY + TLS listener, a bad header (or a ClientHello with no
    header) is closed without an answer, before any TLS; an incomplete one
    at the handshake timeout."""
    ctx, listener = proxy_tls_listener()
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([listener], [{"name": "main", "backends": [b]}],
                                  timeouts={"handshake": "1s"})) as gw:
        bad = [("no PROXY header", b""),
               ("garbage line", b"PROXY BOGUS whatever\r\n"),
               ("v2 bad version", PROXY_V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12)),
               ("v2 longer than max_header_bytes", PROXY_V2_SIGNATURE + bytes([0x21, 0x11, 0x50, 0x00]))]
        for what, prefix in bad:
            sock = socket.create_connection((HOST, gw.port), timeout=5)
            try:
                started = time.monotonic()
                try:
                    tls = tls_after_proxy_on(sock, prefix, ctx)
                except (ssl.SSLError, OSError):
                    tls = None
                check(tls is None, f"{what}: TLS handshake completed")
                check(time.monotonic() - started < 0.9, f"{what}: closed only at the timeout")
            finally:
                sock.close()
        # Half a header, then silence: closed at the 1 s handshake timeout.
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        try:
            started = time.monotonic()
            sock.sendall(proxy_v2("203.0.113.5", 5000, HOST, gw.port)[:20])
            check_eq(sock.recv(1), b"", "incomplete PROXY header: bytes answered")
            check_between(time.monotonic() - started, 0.8, 3.0, "incomplete PROXY header closed after (s)")
        finally:
            sock.close()
        check(entries_for(gw, lambda e: e["reason"] == "PROXY header timeout", 1),
              f"no 'PROXY header timeout' access-log line: {gw.access_log_entries(wait_for=0)}")
        check_eq(b.events("open"), [], "back-end sessions opened by bad PROXY headers")
        logged = wait_until(lambda: gw.error_log().count("bad PROXY header") >= len(bad), 5)
        check(logged, f"'bad PROXY header' lines: {gw.error_log().count('bad PROXY header')} of {len(bad)}")
        # The listener still serves a good client afterwards.
        check_eq(ask_tls_after_proxy(gw.port, proxy_v1("203.0.113.9", 1234, HOST, gw.port), ctx, "fine"),
                 "fine", "echo after the bad headers")
        return f"{len(bad)} bad headers closed before TLS"


@test
def proxy_protocol_before_tls_counts_proxy_sources():
    """limits.max_connections_per_ip on a PROXY + TLS listener counts the
    PROXY source; the 429 comes inside the TLS session."""
    ctx, listener = proxy_tls_listener()
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([listener], [{"name": "main", "backends": [b]}],
                                  limits={"max_connections_per_ip": 1})) as gw:
        held = []
        try:
            for src in ("203.0.113.1", "203.0.113.2"):
                sock = tls_after_proxy(gw.port, proxy_v1(src, 4000, HOST, gw.port), ctx)
                held.append(sock)
                sock.sendall(upgrade_head("/", f"{HOST}:{gw.port}"))
                head, _ = read_head(sock, 5)
                check_eq(parse_head(head)[0][1], "101", f"first session of {src}")
            sock = tls_after_proxy(gw.port, proxy_v1("203.0.113.1", 4001, HOST, gw.port), ctx)
            held.append(sock)
            head, _ = read_head(sock, 5)
            check_eq(parse_head(head)[0][1], "429", "second session of 203.0.113.1, over TLS")
        finally:
            for s in held:
                s.close()


def tls_after_proxy_on(sock, prefix, ctx):
    """Sends <prefix> and then a ClientHello on <sock>; the TLS socket, or
    an exception when the handshake fails."""
    sock.sendall(prefix)
    return ctx.wrap_socket(sock, server_hostname="gw.test")


def _listening(port):
    from harness import port_is_listening
    return port_is_listening(port)


@test(timeout=60)
def trusted_proxies_resolve_client():
    with ExitStack() as stack:
        backends = three_backends(stack)
        untrusted_port, other_port = free_port(), free_port()
        gw = stack.enter_context(Wsgate(gateway_config(
            [{"listen": f"{HOST}:@PORT@", "trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]},
             {"listen": f"{HOST}:{untrusted_port}"},
             {"listen": f"{HOST}:{other_port}", "trusted_proxies": ["192.0.2.0/24"]}],
            [{"name": "main", "hash": "ip", "backends": backends}])))
        check(wait_until(lambda: _listening(untrusted_port) and _listening(other_port), 5),
              "extra listeners not bound")
        # The forwarded header is kept and the TCP peer appended, as always.
        seen = json.loads(ask_backend(gw.port, "headers", extra=[("X-Forwarded-For", "198.51.100.9")]))
        check_eq(seen.get("x-forwarded-for"), "198.51.100.9, 127.0.0.1", "X-Forwarded-For to the back end")
        entries = gw.access_log_entries(wait_for=1)
        check_eq(entries[0]["client"], "198.51.100.9", "access-log client resolved from a trusted X-Forwarded-For")
        # Hashed as 198.51.100.9: the same back end as that address as TCP peer
        # would get, which we compare over many addresses from 127/8 instead.
        agree = 0
        for k in range(2, 22):
            addr = f"127.0.0.{k}"
            direct = ask_backend(gw.port, source=addr)
            via = ask_backend(gw.port, extra=[("X-Forwarded-For", addr)])
            # Walked from the right, trusted hops skipped: 10.1.2.3 is a proxy.
            chain = ask_backend(gw.port, extra=[("X-Forwarded-For", f"{addr}, 10.1.2.3")])
            check_eq((via, chain), (direct, direct), f"{addr}: XFF vs TCP peer")
            agree += 1
        # Untrusted listeners ignore X-Forwarded-For: every value hashes as 127.0.0.1.
        own = ask_backend(untrusted_port)
        for port, what in ((untrusted_port, "no trusted_proxies"), (other_port, "peer not trusted")):
            ids = {ask_backend(port, extra=[("X-Forwarded-For", f"127.0.0.{k}")]) for k in range(2, 22)}
            check_eq(ids, {own}, f"{what}: back ends for 20 forwarded addresses")
        return f"{agree} addresses agree via XFF and as TCP peer; untrusted listeners ignore XFF"


def refusal_without_request(port, source=None, timeout=5.0):
    """(status, headers, body) of what wsgate sends on a fresh connection
    before any request (the per-address refusal happens at accept)."""
    sock = socket.create_connection((HOST, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return parse_response(data)


@test
def max_connections_per_ip_429():
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config(pools=[{"name": "main", "backends": [b]}],
                                  limits={"max_connections_per_ip": 2})) as gw:
        held = []
        try:
            for _ in range(2):
                status, _, sock, _ = raw_upgrade(gw.port)
                held.append(sock)
                check_eq(status, 101, "sessions within the limit")
            status, headers, body = refusal_without_request(gw.port)
            check_eq(status, 429, "third connection from 127.0.0.1")
            check_eq(headers.get("connection", "").lower(), "close", "Connection on the 429")
            # Another address has its own count.
            check_eq(ask_backend(gw.port, "other", source="127.0.0.2"), "other", "session from 127.0.0.2")
            # Closing one session frees a slot.
            held.pop().close()
            ok = wait_until(lambda: _upgrade_status(gw.port) == 101, 5, interval=0.2)
            check(ok, "no slot freed after a session closed")
        finally:
            for s in held:
                s.close()


@test
def max_connections_per_ip_counts_proxy_sources():
    """Behind a PROXY-protocol balancer every connection comes from the
    balancer: the per-address limit must count the PROXY source."""
    with Backend("echo", id="b1") as b, \
            Wsgate(gateway_config([{"listen": f"{HOST}:@PORT@", "proxy_protocol": True}],
                                  [{"name": "main", "backends": [b]}],
                                  limits={"max_connections_per_ip": 1})) as gw:
        held = []
        try:
            for src in ("203.0.113.1", "203.0.113.2"):
                status, _, sock, _ = raw_upgrade(gw.port, prefix=proxy_v1(src, 4000, HOST, gw.port))
                held.append(sock)
                check_eq(status, 101, f"first session of {src}")
            status, _, sock, _ = raw_upgrade(gw.port, prefix=proxy_v1("203.0.113.1", 4001, HOST, gw.port))
            sock.close()
            check_eq(status, 429, "second session of 203.0.113.1")
        finally:
            for s in held:
                s.close()


def _upgrade_status(port):
    status, _, sock, _ = raw_upgrade(port)
    sock.close()
    return status


@test
def handshake_rate_429():
    with ExitStack() as stack:
        b = stack.enter_context(Backend("echo", id="b1"))
        trusted_port = free_port()
        gw = stack.enter_context(Wsgate(gateway_config(
            [{"listen": f"{HOST}:@PORT@"},
             {"listen": f"{HOST}:{trusted_port}", "trusted_proxies": ["127.0.0.0/8"]}],
            [{"name": "main", "backends": [b]}],
            limits={"handshakes_per_ip": 0.5, "handshake_burst": 3})))
        check(wait_until(lambda: _listening(trusted_port), 5), "second listener not bound")
        head = upgrade_head("/", f"{HOST}:{gw.port}")
        statuses = [_upgrade_status(gw.port) for _ in range(3)]
        check_eq(statuses, [101, 101, 101], "burst of 3 handshakes")
        status, headers, _ = raw_request(gw.port, head)
        check_eq(status, 429, "4th handshake within the burst window")
        retry = headers.get("retry-after", "")
        check(retry.isdigit(), f"Retry-After {retry!r} is not delay-seconds")
        check_between(int(retry), 1, 2, "Retry-After at one handshake per 2 s")
        # Other addresses have their own buckets: a TCP peer, and clients
        # named by a trusted proxy.
        check_eq(ask_backend(gw.port, "x", source="127.0.0.2"), "x", "handshake from 127.0.0.2")
        for addr in ("198.51.100.1", "198.51.100.2"):
            check_eq(ask_backend(trusted_port, "y", extra=[("X-Forwarded-For", addr)], source="127.0.0.3"),
                     "y", f"handshake for forwarded client {addr}")
        # The bucket refills one token every 2 s.
        time.sleep(2.1)
        check_eq(_upgrade_status(gw.port), 101, "handshake after waiting 2.1 s")
        refused = entries_for(gw, lambda e: e["status"] == 429, 1)
        check_eq(refused[0]["reason"], "too many handshakes from this address", "access-log reason")
        return f"Retry-After: {retry}"


if __name__ == "__main__":
    main()
