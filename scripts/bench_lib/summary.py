"""The medians of scripts/bench: which metrics each kind of scenario
reports, their median (min-max) over rounds, and the helpers that format
cells and compare a target with the better peer or the floor."""

import statistics

from bench_lib.settings import PEERS, SCENARIO_IDS, SCENARIOS, TARGETS, applies, is_resume, is_tls


# (key, label, higher is better)
# Beside the proxy's own CPU: core 0's busy time per op (/proc/stat, every
# task and softirq on the proxy's core) and the io_uring kernel workers
# (iou-wrk-*, iou-sqp-*) among the proxy's tasks (bench_lib/accounting.py).
CORE_METRICS = [("core0_us_per_op", "core 0 µs/op", False), ("iou_threads", "iou-* threads", False)]
ECHO_METRICS = [("msgs_per_s", "msgs/s", True), ("mb_per_s", "MB/s", True), ("p50_us", "p50 µs", False),
                ("p99_us", "p99 µs", False), ("p999_us", "p99.9 µs", False),
                ("cpu_us_per_op", "CPU µs/msg", False)] + CORE_METRICS
HANDSHAKE_METRICS = ([("handshakes_per_s", "handshakes/s", True), ("cpu_us_per_op", "CPU µs/handshake", False)]
                     + CORE_METRICS + [("backend_close_pct", "back end got a close frame, % of upgrades", True)])
IDLE_METRICS = [("open_sessions", "open sessions", True), ("rss_kib_per_session", "KiB/session", False)]
STORM_METRICS = [("opened", "sessions", True), ("reconnects", "reconnects", True),
                 ("peak_handshakes_per_s", "peak reconnects/s at B", False),
                 ("p99_ms", "p99 reconnect ms", False), ("failed_reconnects", "failed reconnects", False),
                 ("still_closed", "not reconnected at the end", False), ("storm_cpu_s", "proxy CPU s", False)]
METRICS = {"echo": ECHO_METRICS, "handshake": HANDSHAKE_METRICS, "idle": IDLE_METRICS, "storm": STORM_METRICS}


def metrics_for(sid):
    """Scenario f also shows the heartbeats: the load generator's pings and the
    pongs that came back through the proxy, and the proxy's own pings answered."""
    if sid == "f":
        return IDLE_METRICS + [("pings_sent", "client pings", True), ("pongs_received", "pongs back", True),
                               ("pings_answered", "proxy pings answered", True),
                               ("cpu_percent", "CPU % of a core", False)]
    if is_tls(sid) and is_resume(sid):
        return METRICS[SCENARIOS[sid]["kind"]] + [("resumed_share", "resumed share", True)]
    return METRICS[SCENARIOS[sid]["kind"]]
# The metrics that get ratio columns, per scenario kind.
RATIO_METRICS = {"echo": ["msgs_per_s", "cpu_us_per_op"], "handshake": ["handshakes_per_s", "cpu_us_per_op"],
                 "idle": ["rss_kib_per_session"], "storm": ["peak_handshakes_per_s", "storm_cpu_s"]}


def summarize(runs):
    """{scenario: {target: {metric: {median, min, max, n}, errors, mismatches, failures}}}."""
    out = {}
    for sid in SCENARIO_IDS:
        out[sid] = {}
        for t in TARGETS:
            if not applies(t, sid):
                continue
            rs = [r for r in runs if r["scenario"] == sid and r["target"] == t]
            ok = [r["result"] for r in rs if "failed" not in r["result"]]
            entry = {"runs": len(rs), "ok": len(ok),
                     "errors": sum(r["result"].get("errors", 0) for r in rs),
                     "mismatches": sum(r["result"].get("mismatches", 0) for r in rs),
                     "failures": sorted({r["result"].get("failed") or r["result"]["warning"] for r in rs
                                         if "failed" in r["result"] or "warning" in r["result"]})}
            if is_tls(sid):
                entry["tls"] = sorted({f"{r['tls_version']} {r['tls_cipher']}"
                                       + (f" ALPN {r['alpn']}" if r.get("alpn") else "") for r in ok
                                       if r.get("tls_version")})
            if SCENARIOS[sid]["kind"] == "handshake":
                entry["backend_close_codes"] = sorted({code for r in ok for code in r.get("backend_close_codes", [])})
            for key, _, _ in metrics_for(sid):
                vals = [r[key] for r in ok if key in r]
                if vals:
                    entry[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                                  "n": len(vals)}
            out[sid][t] = entry
    return out


def fmt(v):
    if v is None:
        return "–"
    if float(v).is_integer() and abs(v) < 1000:
        return str(int(v))
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(entry, key):
    m = entry.get(key)
    if not m:
        return "–"
    if m["n"] == 1 or m["min"] == m["max"]:
        return fmt(m["median"])
    return f"{fmt(m['median'])} ({fmt(m['min'])}–{fmt(m['max'])})"


def median_of(summary, sid, target, key):
    m = summary[sid].get(target, {}).get(key)
    return m["median"] if m else None


def best_peer(summary, sid, key, higher):
    vals = [(median_of(summary, sid, p, key), p) for p in PEERS if p in TARGETS]
    vals = [(v, p) for v, p in vals if v is not None]
    if not vals:
        return None, None
    return (max if higher else min)(vals)


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b not in (None, 0) else "–"
