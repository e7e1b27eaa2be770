"""scripts/bench's settings: the environment knobs, the scenarios and which
target applies to which scenario. Read once at import; TARGETS and
SCENARIO_IDS are lists that scripts/bench may shorten (never rebinds)."""

import os

QUICK = os.environ.get("QUICK") == "1"
FULL = os.environ.get("FULL") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "1" if QUICK else "3"))
DURATION = float(os.environ.get("DURATION", "1" if QUICK else "5"))
WARMUP = float(os.environ.get("WARMUP", "0.3" if QUICK else "1"))
BUILD = os.environ.get("BUILD", "build")
OUT = os.environ.get("BENCH_OUT", "bench-results")
TARGETS = os.environ.get("TARGETS", "direct wsgate wsgate-uring nginx haproxy").split()
SCENARIO_IDS = os.environ.get("SCENARIOS", "a b c d e t u v x h").split()
# "r" is three rows: plain, TLS, TLS with resumption; "h" two: the load over
# h2 streams and the same load over HTTP/1.1 connections.
EXPANDED = {"r": ["r", "rt", "rr"], "h": ["h", "h1"]}
SCENARIO_IDS = [x for sid in SCENARIO_IDS for x in EXPANDED.get(sid, [sid])]
STORM_SESSIONS = int(os.environ.get("STORM_SESSIONS", "2000" if QUICK else "9000"))
STORM_DRAIN = int(os.environ.get("STORM_DRAIN", "10"))
if FULL and "f" not in SCENARIO_IDS:
    SCENARIO_IDS.append("f")
IDLE_SESSIONS = int(os.environ.get("IDLE_SESSIONS", "1000" if QUICK else "5000"))
FULL_SESSIONS = int(os.environ.get("FULL_SESSIONS", "9900"))
TLS_IDLE_SESSIONS = int(os.environ.get("TLS_IDLE_SESSIONS", "500" if QUICK else "2000"))
# Scenario h: H2_CONNECTIONS x H2_STREAMS WebSocket streams, H2_INFLIGHT
# messages in flight on each (h1: as many TLS connections).
H2_CONNECTIONS = int(os.environ.get("H2_CONNECTIONS", "4"))
H2_STREAMS = int(os.environ.get("H2_STREAMS", "16"))
H2_INFLIGHT = int(os.environ.get("H2_INFLIGHT", "4"))
LOADGEN_AS_LIMIT = 4 << 30  # address-space cap for build/ws_loadgen (bytes)

PEERS = ["nginx", "haproxy"]
ENV_KNOBS = ("QUICK", "FULL", "ROUNDS", "DURATION", "WARMUP", "TARGETS", "SCENARIOS", "WORKERS", "BENCH_PIN",
             "STORM_SESSIONS", "STORM_DRAIN", "H2_CONNECTIONS", "H2_STREAMS", "H2_INFLIGHT")

SCENARIOS = {
    "a": dict(title="(a) latency-bound echo: 64 connections, 128 B, window 1", kind="echo",
              args=["--mode", "echo", "--connections", "64", "--size", "128", "--window", "1"]),
    "b": dict(title="(b) throughput: 64 connections, 128 B, window 16", kind="echo",
              args=["--mode", "echo", "--connections", "64", "--size", "128", "--window", "16"]),
    "c": dict(title="(c) bandwidth: 16 connections, 16 KiB, window 4", kind="echo",
              args=["--mode", "echo", "--connections", "16", "--size", "16384", "--window", "4"]),
    "d": dict(title="(d) handshakes: 8 parallel connectors (connect, upgrade, close)", kind="handshake",
              args=["--mode", "handshake", "--connectors", "8"]),
    "x": dict(title="(x) vanishing clients: 8 parallel connectors (connect, upgrade, TCP close right after "
                    "the 101, no close frame)", kind="handshake",
              args=["--mode", "handshake", "--connectors", "8", "--vanish"]),
    "e": dict(title=f"(e) memory: {IDLE_SESSIONS:,} idle sessions", kind="idle",
              args=["--mode", "idle", "--connections", str(IDLE_SESSIONS), "--connectors", "64"]),
    "f": dict(title=f"(f) {FULL_SESSIONS:,} idle sessions held 60 s, heartbeats on", kind="idle",
              args=["--mode", "idle", "--connections", str(FULL_SESSIONS), "--connectors", "64",
                    "--ping-interval", "10"]),
    "t": dict(title="(t) wss throughput: 64 connections, 128 B, window 16, TLS at the proxy", kind="echo",
              tls=True,
              args=["--mode", "echo", "--connections", "64", "--size", "128", "--window", "16"]),
    "u": dict(title=f"(u) wss memory: {TLS_IDLE_SESSIONS:,} idle TLS sessions", kind="idle", tls=True,
              args=["--mode", "idle", "--connections", str(TLS_IDLE_SESSIONS), "--connectors", "64"]),
    "v": dict(title="(v) TLS handshakes: 8 parallel connectors (connect, TLS, upgrade, close)",
              kind="handshake", tls=True, args=["--mode", "handshake", "--connectors", "8"]),
    "w": dict(title="(w) resumed TLS handshakes: 8 parallel connectors, each offering its last session",
              kind="handshake", tls=True, resume=True,
              args=["--mode", "handshake", "--connectors", "8", "--resume"]),
    "r": dict(title=f"(r) reconnect storm, plain: {STORM_SESSIONS:,} sessions, one of two back ends removed",
              kind="storm"),
    "rt": dict(title=f"(r) reconnect storm, TLS (full handshakes): {STORM_SESSIONS:,} sessions",
               kind="storm", tls=True),
    "rr": dict(title=f"(r) reconnect storm, TLS with resumption: {STORM_SESSIONS:,} sessions",
               kind="storm", tls=True, resume=True),
    "h": dict(title=f"(h) WebSocket over HTTP/2 (RFC 8441), TLS: {H2_CONNECTIONS} connections × {H2_STREAMS} "
                    f"streams, 128 B, {H2_INFLIGHT} in flight per stream", kind="echo", tls=True, h2_loadgen=True,
              args=["--mode", "h2", "--connections", str(H2_CONNECTIONS), "--streams", str(H2_STREAMS),
                    "--inflight", str(H2_INFLIGHT), "--size", "128"]),
    "h1": dict(title=f"(h) the same load over HTTP/1.1, TLS: {H2_CONNECTIONS * H2_STREAMS} connections, 128 B, "
                     f"{H2_INFLIGHT} in flight each (the proxies' wss path, as in t)", kind="echo", tls=True,
               h2_loadgen=True,
               args=["--mode", "h1", "--connections", str(H2_CONNECTIONS), "--streams", str(H2_STREAMS),
                     "--inflight", str(H2_INFLIGHT), "--size", "128"]),
}
# What ws_loadgen adds for a TLS scenario: SNI, no verification (see --tls).
TLS_LOADGEN_ARGS = ["--tls", "--sni", "localhost"]

NCPU = os.cpu_count() or 1
WORKERS = int(os.environ.get("WORKERS", "1"))
# Several workers share the cores with the load generator: no pinning then,
# unless BENCH_PIN=1 asks for it.
PIN = os.environ.get("BENCH_PIN", "1" if WORKERS == 1 else "0") == "1" and NCPU >= 2
PROXY_CPU, CLIENT_CPU = "0", "1"

CERT = {}           # TLS scenarios: "cert", "key" and "pem" (both, for HAProxy) paths


def is_tls(sid):
    return SCENARIOS[sid].get("tls", False)


def is_resume(sid):
    return SCENARIOS[sid].get("resume", False)


def uses_h2_loadgen(sid):
    """Scenario h runs tests/bench/h2_loadgen.js (Node's http2) rather than
    build/ws_loadgen."""
    return SCENARIOS[sid].get("h2_loadgen", False)


def not_applicable(target, sid):
    """Why <target> has no run in scenario <sid>, or None when it has one."""
    if target in ("direct", "floor") and SCENARIOS[sid]["kind"] == "storm":
        return "no reload (the back end itself / a blind relay)"
    if target in ("direct", "floor") and is_tls(sid):
        return "speaks no TLS (ws_echo / a blind TCP relay)"
    if target == "nginx" and sid == "h":
        return "nginx does not implement RFC 8441 (WebSocket over HTTP/2)"
    return None


def applies(target, sid):
    return not_applicable(target, sid) is None


