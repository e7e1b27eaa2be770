"""Concurrency: many sessions open at once, every message echoed intact."""

import asyncio
import time

import websockets

from harness import Backend, Wsgate, check, check_eq, main, run_async, test, ws_connect

SESSIONS = 500
MESSAGES = 20


def message(session, seq):
    # Distinct per session and position, with a length that varies too, so a
    # message delivered to the wrong session or out of order cannot match.
    return f"s{session:04d}-m{seq:02d}-" + "x" * ((session * 31 + seq * 7) % 300)


@test(timeout=150)
def concurrent_500_sessions():
    with Backend("echo", id="b1") as b, Wsgate({"backends": [b]}) as gw:
        counts = {"echoed": 0, "lost": 0, "corrupted": 0, "failed_sessions": 0}
        errors = []
        opened = 0
        all_open = asyncio.Event()
        handshakes = asyncio.Semaphore(100)

        async def session(i):
            nonlocal opened
            try:
                async with handshakes:
                    ws = await ws_connect(gw.port, f"/s{i}", compression=None,
                                          open_timeout=20)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
                counts["failed_sessions"] += 1
                counts["lost"] += MESSAGES
                errors.append(f"session {i}: connect: {e!r}")
                opened += 1
                if opened == SESSIONS:
                    all_open.set()
                return
            opened += 1
            if opened == SESSIONS:
                all_open.set()
            received = 0
            try:
                await asyncio.wait_for(all_open.wait(), 60)
                for seq in range(MESSAGES):
                    await ws.send(message(i, seq))
                for seq in range(MESSAGES):
                    got = await asyncio.wait_for(ws.recv(), 20)
                    received += 1
                    if got == message(i, seq):
                        counts["echoed"] += 1
                    else:
                        counts["corrupted"] += 1
                        errors.append(f"session {i} message {seq}: got {got[:40]!r}")
                await ws.close()
            except (asyncio.TimeoutError, websockets.WebSocketException, OSError) as e:
                counts["failed_sessions"] += 1
                errors.append(f"session {i}: {e!r}")
            finally:
                counts["lost"] += MESSAGES - received
                if not ws.closed:
                    ws.transport.abort()

        async def all_sessions():
            await asyncio.gather(*(session(i) for i in range(SESSIONS)))

        started = time.monotonic()
        run_async(all_sessions(), timeout=120)
        took = time.monotonic() - started
        summary = (f"{SESSIONS} sessions, {SESSIONS * MESSAGES} messages: "
                   f"{counts['echoed']} echoed, {counts['lost']} lost, "
                   f"{counts['corrupted']} corrupted, {counts['failed_sessions']} "
                   f"failed sessions in {took:.1f}s")
        check(not errors and counts["echoed"] == SESSIONS * MESSAGES,
              f"{summary}; first errors: {errors[:3]}")
        entries = gw.access_log_entries(wait_for=SESSIONS, timeout=10)
        check_eq(len(entries), SESSIONS, "access-log entries")
        bad = [e for e in entries if e.get("status") != 101 or e.get("messages_in") != MESSAGES]
        check_eq(len(bad), 0, f"entries not 101 with {MESSAGES} messages in (first {bad[:1]})")
        return summary


if __name__ == "__main__":
    main()
