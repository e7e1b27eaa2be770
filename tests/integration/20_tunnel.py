"""Tunnel: frames relayed both ways, protocol errors, limits, timers,
heartbeat, close relay, resets and backpressure (RFC 6455 sections 5-7).

Every tunnel here is plain on both sides, so these tests drive the socket
transport (proxy/runtime/transport_socket.cpp), the tunnel policy
(proxy/runtime/tunnel.cpp) and the session state machine
(proxy/runtime/session.cpp, proxy/runtime/session_handshake.cpp,
proxy/runtime/session_backend.cpp); 55_tls drives the socket transport with
a TLS client and with a TLS back end."""

import asyncio
import os
import socket
import struct
import time

from harness import (HOST, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                     Backend, FrameSocket, RawWs, Wsgate, check,
                     check_between, check_eq, encode_frame, main, new_key, read_head,
                     greets_with_the_101, recorder, run_async, test, upgrade_head, upgrade_then_reset,
                     ws_connect)


def close_event(backend, what):
    """(code, reason) of the back end's one close event."""
    events = backend.close_events(wait_for=1, timeout=5)
    check_eq(len(events), 1, f"{what}: close events at the back end")
    return events[0]["code"], events[0]["reason"]


def expect_protocol_error(frames, what, config=None):
    """Sends <frames> (raw bytes) after a good echo; the client must get
    1002 and the back end 1001."""
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **(config or {})}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("before")
        check_eq(ws.recv_message(), (OP_TEXT, b"before"), f"{what}: echo before")
        for data in frames:
            ws.send_raw(data)
        got = ws.recv_close(timeout=5)
        check(got is not None, f"{what}: no close frame, connection just ended")
        check_eq(got[0], 1002, f"{what}: close code to the client")
        check(ws.wait_eof(6), f"{what}: TCP not closed within 6 s")
        check_eq(close_event(b, what)[0], 1001, f"{what}: close code to the back end")


@test
def echo_text_and_binary():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        async def go():
            async with ws_connect(gw.port) as ws:
                await ws.send("hello")
                check_eq(await ws.recv(), "hello", "text echo")
                await ws.send(b"\x00\x01\xfe\xff")
                check_eq(await ws.recv(), b"\x00\x01\xfe\xff", "binary echo")
                await ws.send("")
                check_eq(await ws.recv(), "", "empty text echo")
        run_async(go())


def io_uring_instances(pid):
    """How many io_uring instances process <pid> holds (each is an
    anon_inode:[io_uring] descriptor)."""
    fd_dir = f"/proc/{pid}/fd"
    count = 0
    for name in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, name)) == "anon_inode:[io_uring]"
        except OSError:
            continue
    return count


@test
def io_mode_in_effect():
    """The suite runs twice (scripts/run-tests): with the default epoll
    transport, and with WSGATE_IO=io_uring. Each run proves which one its
    tunnels used, so the io_uring run cannot pass on epoll by a silent
    fallback."""
    io = os.environ.get("WSGATE_IO", "epoll")
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        async def go():
            async with ws_connect(gw.port) as ws:
                await ws.send("on " + io)
                check_eq(await ws.recv(), "on " + io, "echo")
                return io_uring_instances(gw.pid)
        rings = run_async(go())
        if io == "io_uring":
            check(rings >= 1, "io = io_uring, but wsgate holds no io_uring instance")
            check("io_uring cannot be set up" not in gw.error_log(), f"fell back to epoll: {gw.error_log()[-300:]}")
        else:
            check_eq(rings, 0, "io_uring instances with io = epoll")
        return f"io = {io}, {rings} io_uring instance(s)"


@test
def permessage_deflate_end_to_end():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        async def go():
            async with ws_connect(gw.port) as ws:
                names = [e.name for e in ws.extensions]
                check_eq(names, ["permessage-deflate"], "negotiated extensions")
                text = "compressible " * 10000
                await ws.send(text)
                check_eq(await ws.recv(), text, "compressed echo")
        run_async(go())


@test
def large_message_1mib():
    payload = os.urandom(1 << 20)
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        async def go():
            async with ws_connect(gw.port, compression=None) as ws:
                await ws.send(payload)
                got = await ws.recv()
                check(got == payload, f"1 MiB echo differs (got {len(got)} bytes)")
        run_async(go())


@test
def fragmented_message_with_ping_inside():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_frame(OP_TEXT, b"hel", fin=False)
        ws.send_frame(OP_PING, b"mid")
        ws.send_frame(OP_CONT, b"lo ", fin=False)
        ws.send_frame(OP_CONT, b"world", fin=True)
        pongs, message = [], None
        for _ in range(10):
            frame = ws.recv_frame(timeout=5)
            check(frame is not None, "connection ended")
            if frame.opcode == OP_PONG:
                pongs.append(frame.payload)
                continue
            message = (message or b"") + frame.payload
            if frame.fin:
                break
        check_eq(pongs, [b"mid"], "pongs to the ping sent between fragments")
        check_eq(message, b"hello world", "reassembled echo")


@test
def ping_pong_pass_through():
    with recorder(answer_pings=True) as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_ping(b"abc")
        frame = ws.recv_frame(timeout=5)
        check(frame is not None and frame.opcode == OP_PONG, f"expected a pong, got {frame}")
        check_eq(frame.payload, b"abc", "pong payload")
        check_eq([f.payload for f in rb.frames_of(OP_PING)], [b"abc"], "pings at the back end")
        check(all(f.masked for f in rb.frames), "frames to the back end must stay masked")
        check(not frame.masked, "frames to the client must be unmasked")


@test
def unmasked_client_frame_1002():
    expect_protocol_error([encode_frame(OP_TEXT, b"unmasked", mask=False)], "unmasked")


@test
def reserved_opcode_1002():
    expect_protocol_error([encode_frame(0x3, b"x")], "opcode 0x3")
    expect_protocol_error([encode_frame(0xB, b"x")], "opcode 0xB")


@test
def oversized_ping_1002():
    expect_protocol_error([encode_frame(OP_PING, b"p" * 200)], "200-byte ping")


@test
def fragmented_ping_1002():
    expect_protocol_error([encode_frame(OP_PING, b"p", fin=False)], "ping with FIN clear")


@test
def masked_backend_frame_1002():
    masked = encode_frame(OP_TEXT, b"masked by a server", mask=True)
    with recorder(on_open=[masked]) as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        got = ws.recv_close(timeout=5)
        check(got is not None, "client: no close frame")
        check_eq(got[0], 1001, "close code to the client")
        ws.send_close(1001)
        check(ws.wait_eof(2), "client: TCP still open 2 s after it answered the close")
        closes = [v for k, v in rb.events if k == "close"]
        check(closes, f"back end got no close frame (events {rb.events})")
        check_eq(closes[0][0], 1002, "close code to the back end")


@test
def message_too_big_1009():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "limits": {"max_message_bytes": 1000}}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_binary(b"a" * 900)
        check_eq(ws.recv_message(), (OP_BINARY, b"a" * 900), "900-byte echo")
        ws.send_binary(b"b" * 2000)
        got = ws.recv_close(timeout=5)
        check(got is not None, "no close frame for a 2000-byte message")
        check_eq(got[0], 1009, "close code to the client")
        check_eq(close_event(b, "single frame")[0], 1001, "close code to the back end")

        ws = RawWs.connect(gw.port)
        for i in range(3):
            ws.send_frame(OP_TEXT if i == 0 else OP_CONT, b"c" * 400, fin=i == 2)
        got = ws.recv_close(timeout=5)
        check(got is not None, "no close frame for 3 fragments of 400 bytes")
        check_eq(got[0], 1009, "fragmented: close code to the client")


@test
def idle_timeout_closes_both_sides():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "timeouts": {"idle": "1s"}}) as gw:
        ws = RawWs.connect(gw.port)
        started = time.monotonic()
        got = ws.recv_close(timeout=6)
        elapsed = time.monotonic() - started
        check_eq(got, (1001, "idle timeout"), "close to the client")
        check_between(elapsed, 0.8, 3.0, "seconds until the idle close")
        check_eq(close_event(b, "idle"), (1001, "idle timeout"), "close to the back end")
        ws.send_close(1001)
        check(ws.wait_eof(2), "TCP still open 2 s after the client answered the close")


@test
def heartbeat_cuts_dead_client():
    config = {"heartbeat": {"interval": "1s", "timeout": "1s", "peers": "client"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        ws = RawWs.connect(gw.port)
        started = time.monotonic()
        ended = ws.wait_eof(8)   # never answers the pings it reads
        elapsed = time.monotonic() - started
        check(ended, "dead client still connected after 8 s")
        check(len(ws.pings) >= 1, "no ping from wsgate before the cut")
        check_between(elapsed, 1.5, 4.5, "seconds until the cut")
        check_eq(close_event(b, "heartbeat"), (1001, "heartbeat timeout"),
                 "close to the back end")


@test
def heartbeat_keeps_live_client():
    config = {"heartbeat": {"interval": "1s", "timeout": "1s", "peers": "client"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        async def go():
            async with ws_connect(gw.port) as ws:   # answers pings by itself
                await asyncio.sleep(4.5)
                await ws.send("whoami")
                check_eq(await ws.recv(), "id:b1", "answer after 4.5 s of silence")
        run_async(go())
        check_eq(close_event(b, "live client")[0], 1000, "the client's normal close, not a cut")


@test
def heartbeat_pongs_not_forwarded():
    config = {"heartbeat": {"interval": "500ms", "timeout": "2s", "peers": "client"}}
    with recorder(answer_pings=False) as rb, Wsgate({"backends": [rb], **config}) as gw:
        ws = RawWs.connect(gw.port)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                frame = ws.recv_frame(timeout=deadline - time.monotonic())
            except socket.timeout:
                break
            check(frame is not None, "connection ended while answering pings")
            if frame.opcode == OP_PING:
                ws.pings.append(frame.payload)
                ws.send_pong(frame.payload)
        check(len(ws.pings) >= 2, f"expected >= 2 pings from wsgate in 3 s, got {len(ws.pings)}")
        ws.send_text("still here")
        check_eq(ws.recv_message(), (OP_TEXT, b"still here"), "echo after the pongs")
        check_eq(rb.frames_of(OP_PONG), [], "pongs forwarded to the back end")
        check_eq(rb.frames_of(OP_PING), [], "pings forwarded to the back end")


@test
def heartbeat_does_not_defer_idle_timeout():
    config = {"timeouts": {"idle": "2s"},
              "heartbeat": {"interval": "500ms", "timeout": "2s", "peers": "client"}}
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b], **config}) as gw:
        ws = RawWs.connect(gw.port)
        started = time.monotonic()
        got = None
        while time.monotonic() - started < 6:
            op_payload = ws.recv_message(timeout=6, answer_pings=True)
            check(op_payload is not None, "connection ended without a close frame")
            if op_payload[0] == OP_CLOSE:
                got = op_payload[1]
                break
        elapsed = time.monotonic() - started
        check(got is not None, "no close within 6 s")
        check_eq(got[2:].decode(), "idle timeout", "close reason")
        check_between(elapsed, 1.5, 3.5, "seconds until the idle close")
        check(len(ws.pings) >= 1, "no heartbeat ping seen")


@test
def backend_killed_client_gets_1014():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("one")
        check_eq(ws.recv_message(), (OP_TEXT, b"one"), "echo before the kill")
        b.kill()
        check_eq(ws.recv_close(timeout=5), (1014, "backend reset"), "close to the client")
        ws.send_close(1000)
        check(ws.wait_eof(2), "TCP still open 2 s after the client answered the close")


@test
def backend_rst_client_gets_1014():
    with upgrade_then_reset(echoes=2) as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        for text in (b"one", b"two"):
            ws.send_frame(OP_TEXT, text)
            check_eq(ws.recv_message(), (OP_TEXT, text), "echo before the reset")
        check_eq(ws.recv_close(timeout=5), (1014, "backend reset"), "close to the client")
        ws.send_close(1000)
        check(ws.wait_eof(2), "TCP still open 2 s after the client answered the close")


@test
def client_vanishes_backend_gets_1001():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        for how in ("close", "abort"):
            ws = RawWs.connect(gw.port)
            ws.send_text("hi")
            check_eq(ws.recv_message(), (OP_TEXT, b"hi"), "echo")
            getattr(ws, how)()
        closes = b.close_events(wait_for=2, timeout=6)
        check_eq([c["code"] for c in closes], [1001, 1001], "close codes to the back end")


@test
def client_close_relayed():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_close(4001, "bye")
        check_eq(ws.recv_close(timeout=5), (4001, "bye"), "back end's answer to the client")
        check(ws.wait_eof(6), "TCP not closed within 6 s")
        check_eq(close_event(b, "client close"), (4001, "bye"), "close at the back end")


@test
def backend_close_relayed():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_text("close:4002")
        check_eq(ws.recv_close(timeout=5), (4002, "by backend"), "close to the client")
        ws.send_close(4002, "ok")
        check(ws.wait_eof(6), "TCP not closed within 6 s")
        check_eq(close_event(b, "backend close")[0], 4002, "client's answer at the back end")


@test
def frames_in_the_same_segment_as_the_heads():
    # The client sends two frames in the same segment as its upgrade
    # request, and the back end two in the same segment as its 101: all
    # four arrive, in order, once the tunnel opens.
    with greets_with_the_101() as rb, Wsgate({"backends": [rb]}) as gw:
        sock = socket.create_connection((HOST, gw.port), timeout=5)
        key = new_key()
        sock.sendall(upgrade_head("/", f"{HOST}:{gw.port}", key) +
                     encode_frame(OP_TEXT, b"early-1") + encode_frame(OP_BINARY, b"early-2"))
        resp, leftover = read_head(sock, 5)
        check(resp.startswith(b"HTTP/1.1 101"), f"answer: {resp[:40]!r}")
        ws = FrameSocket(sock, leftover, mask=True)
        got = [ws.recv_message() for _ in range(4)]
        check_eq(got, [(OP_TEXT, b"hello-1"), (OP_TEXT, b"hello-2"), (OP_TEXT, b"early-1"),
                       (OP_BINARY, b"early-2")], "frames from both heads' segments")
        check_eq([v for k, v in rb.events if k == "frame"], [b"early-1", b"early-2"], "at the back end")
        ws.send_close(1000)
        check_eq(ws.recv_close(), (1000, ""), "close reply")


@test(timeout=90)
def backpressure_bounds_memory():
    count, size = 6000, 16384        # 96 MiB, far above any socket buffers
    bound_kib = 32 * 1024
    with Backend("flood", id="f", count=count, size=size) as b, \
            Wsgate({"backends": [b]}) as gw:
        baseline = gw.rss_kib()
        ws = RawWs.connect(gw.port)
        peak = baseline
        for _ in range(12):              # the client reads nothing for 3 s
            time.sleep(0.25)
            peak = max(peak, gw.rss_kib())
        check(peak - baseline < bound_kib,
              f"RSS grew by {(peak - baseline) // 1024} MiB while the client was not reading")
        got = 0
        while True:
            message = ws.recv_message(timeout=15)
            check(message is not None, f"connection ended after {got} messages")
            op, payload = message
            if op == OP_TEXT:
                check_eq(payload, b"done", "final text")
                break
            seq = struct.unpack(">Q", payload[:8])[0]
            check_eq(seq, got, "sequence number")
            check(payload[8:] == bytes([seq % 251]) * (size - 8), f"message {seq} corrupted")
            got += 1
        check_eq(got, count, "messages received")
        ws.send_close(1000)
        return (f"{count} x {size} B relayed in order, RSS peak +{(peak - baseline) // 1024} MiB"
                f" while stalled (bound {bound_kib // 1024} MiB)")



@test
def bulk_burst_then_fin_all_delivered():
    """A burst far above one read (768 KiB), sent in one go and followed by
    the client's FIN: every byte goes through, in order, and the EOF is seen
    only after the last of them."""
    count, size = 16, 48 * 1024
    payloads = [bytes([i]) * size for i in range(count)]
    with recorder() as rb, Wsgate({"backends": [rb]}) as gw:
        ws = RawWs.connect(gw.port)
        ws.send_raw(b"".join(encode_frame(OP_BINARY, p, True, ws.mask) for p in payloads))
        ws.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(kind == "close" for kind, _ in rb.events):
            time.sleep(0.05)
        got = [f.payload for f in rb.frames_of(OP_BINARY)]
        check_eq(len(got), count, "binary frames at the back end")
        check(got == payloads, "a payload differs at the back end")
        closes = [value for kind, value in rb.events if kind == "close"]
        check_eq([c[0] for c in closes], [1001], "close to the back end after the client's FIN")
        ws.close()


if __name__ == "__main__":
    main()
