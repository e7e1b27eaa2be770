"""The report of scripts/bench: the Markdown tables with their ratio
columns (followed by the issues' targets, bench_lib/goals.py) and the
gnuplot chart."""

import os
import shutil
import subprocess

from bench_lib.goals import goal_lines
from bench_lib.procs import log
from bench_lib.settings import SCENARIO_IDS, SCENARIOS, TARGETS, applies, is_tls, not_applicable
from bench_lib.summary import RATIO_METRICS, best_peer, cell, median_of, metrics_for, ratio


def markdown(summary, meta):
    lines = ["# wsgate benchmark: direct vs wsgate (epoll, io_uring) vs nginx vs HAProxy", ""]
    lines += [f"- Date: {meta['date']}; command: `{meta['command']}`",
              f"- Machine: {meta['cpu']} ({meta['ncpu']} cores), Linux {meta['kernel']}",
              f"- Versions: {meta['versions']['wsgate']}; {meta['versions']['nginx']}; "
              f"{meta['versions']['haproxy']}",
              f"- Rounds: {meta['rounds']} interleaved ({' '.join(TARGETS)}, repeated); "
              f"{meta['duration']} s measured per run after {meta['warmup']} s warm-up; "
              "cells are median (min–max) over rounds",
              f"- Pinning: {meta['pinning']}",
              f"- {meta['workers']} worker(s) per proxy (nginx worker_processes {meta['workers']}, "
              f"HAProxy nbthread {meta['workers']}, wsgate workers = {meta['workers']}; floor: always 1 thread); "
              "access logs off for all three; tunnel timeouts 1 h",
              "- CPU = the proxy's own CPU time (all threads, /proc/PID/task/*/schedstat; nginx master + worker) "
              "over the measured window ÷ messages echoed (or handshakes completed). "
              "For *direct* the CPU and KiB columns are the echo back end's own, as a floor. Tasks that exit "
              "during the window (io_uring's iou-wrk-* workers may) count up to their last sample (every 50 ms).",
              "- core 0 µs/op = core 0's busy time over the window (/proc/stat user+nice+system+irq+softirq+steal, "
              "so kernel threads and softirqs on the proxy's core count) ÷ messages or handshakes; meaningful "
              "only with pinning, and it includes whatever else the machine ran on core 0. "
              "iou-* threads = io_uring kernel workers (iou-wrk-*, iou-sqp-*) seen among the proxy's tasks "
              "during the window.",
              "- wsgate-uring = wsgate with `[server] io = \"io_uring\"` (the tunnels' plain sockets through one "
              "io_uring per worker; a TLS side stays on its own transport); each run checks that the process "
              "holds an io_uring.",
              "- MB/s counts echoed payload bytes (one direction), 1 MB = 10^6 bytes. "
              "KiB/session = (VmRSS with all sessions open − VmRSS before) ÷ sessions.",
              "- TLS scenarios (t, u, v, w, h): the proxy terminates TLS with one self-signed ECDSA P-256 "
              "certificate (TLS 1.2 minimum, default TLS 1.3 suites); the load generator sends SNI, "
              "does not verify and resumes no session except in w and the resumption storm; "
              "the back end stays plain.",
              "- Handshake scenarios: \"back end got a close frame\" = close frames the echo back end received "
              "÷ sessions it upgraded, over the whole run. In d the client's own close (1000) is relayed; "
              "in x the client leaves without one (TCP close right after the 101, a handshake counts at the "
              "101), so only a proxy that tells the back end its client left scores above 0.",
              "- h: load from tests/bench/h2_loadgen.js (Node's http2, one thread on the client core; it bounds "
              "the message rate for every target, so CPU per message is higher than in t at the same size); "
              "h1 is the same load over HTTP/1.1 connections, so h ÷ h1 per target is the price or gain of "
              "running the WebSockets as h2 streams.",
              "- Ratio columns: target ÷ direct, target ÷ the better of nginx and HAProxy, and target ÷ floor "
              "(tests/bench/tcp_relay_floor, when it ran) for that column (for CPU and KiB, lower is better).",
              ""]
    for sid in SCENARIO_IDS:
        lines += scenario_table(summary, sid)
    lines += goal_lines(summary)
    return "\n".join(lines) + "\n"


def ratio_columns(sid, metrics):
    """(key, higher is better, against, label) of the ratio columns of <sid>:
    against "direct", "peer" (the better of nginx and HAProxy) or "floor"."""
    kind = SCENARIOS[sid]["kind"]
    out = []
    for key in RATIO_METRICS[kind]:
        label = next(lbl for k, lbl, _ in metrics if k == key)
        higher = next(h for k, _, h in metrics if k == key)
        if key != "cpu_us_per_op" and key != "rss_kib_per_session" and not is_tls(sid) and kind != "storm":
            out.append((key, higher, "direct", f"{label} ÷ direct"))
        out.append((key, higher, "peer", f"{label} ÷ best peer"))
        if "floor" in TARGETS and applies("floor", sid) and kind in ("echo", "handshake"):
            out.append((key, higher, "floor", f"{label} ÷ floor"))
    return out


def scenario_table(summary, sid):
    """The table of scenario <sid>: one row per target (\"n/a\" and why for a
    target the scenario does not apply to), then what TLS negotiated and
    which close codes reached the back end."""
    sc = SCENARIOS[sid]
    metrics = metrics_for(sid)
    lines = [f"## {sc['title']}", ""]
    ratio_cols = ratio_columns(sid, metrics)
    head = ["target"] + [label for _, label, _ in metrics] + [c[3] for c in ratio_cols] + ["errors / mismatches"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for t in TARGETS:
        if not applies(t, sid):
            lines.append("| " + " | ".join([t, "n/a: " + not_applicable(t, sid)] + [""] * (len(head) - 2)) + " |")
            continue
        if t not in summary[sid]:
            continue
        e = summary[sid][t]
        row = [t] + [cell(e, key) for key, _, _ in metrics]
        for key, higher, against, _ in ratio_cols:
            mine = median_of(summary, sid, t, key)
            other = (best_peer(summary, sid, key, higher)[0] if against == "peer"
                     else median_of(summary, sid, against, key))
            # The CPU and RSS of "direct" are the back end's: no ratio to a proxy's.
            own = t == "direct" and against != "direct" and key not in ("msgs_per_s", "handshakes_per_s")
            row.append("–" if own else ratio(mine, other))
        errs = f"{e['errors']} / {e['mismatches']}"
        if e["failures"]:
            errs += " — " + "; ".join(e["failures"])[:160]
        row.append(errs)
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if is_tls(sid):
        negotiated = [f"{t} {', '.join(e['tls']) or '–'}" for t, e in summary[sid].items()]
        lines += ["Negotiated: " + "; ".join(negotiated) + ".", ""]
    if sc["kind"] == "handshake":
        codes = [f"{t} {', '.join(e['backend_close_codes']) or 'none'}" for t, e in summary[sid].items()]
        lines += ["Close codes at the back end: " + "; ".join(codes) + ".", ""]
    return lines


def chart(summary, path, tmp):
    """A PNG of bar panels (median, min–max error bars) via gnuplot."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no chart")
        return False
    panels = []
    for sid in SCENARIO_IDS:
        kind = SCENARIOS[sid]["kind"]
        if kind in ("echo", "handshake"):
            unit = "µs per message" if kind == "echo" else "µs per handshake"
            panels.append((sid, "cpu_us_per_op", f"({sid}) proxy CPU, {unit}", False))
        elif kind == "storm":
            what = {"r": "plain", "rt": "TLS", "rr": "TLS + resumption"}[sid]
            panels.append((sid, "peak_handshakes_per_s", f"(r) {what}: peak reconnects/s at the surviving back end",
                           False))
            panels.append((sid, "p99_ms", f"(r) {what}: p99 reconnect latency, ms", False))
        else:
            panels.append((sid, "rss_kib_per_session", f"({sid}) KiB per idle session", False))
    if "b" in SCENARIO_IDS:
        panels.append(("b", "msgs_per_s", "(b) messages/s, 128 B window 16", True))
    if "d" in SCENARIO_IDS:
        panels.append(("d", "handshakes_per_s", "(d) handshakes/s", True))
    if "x" in SCENARIO_IDS:
        panels.append(("x", "handshakes_per_s", "(x) handshakes/s, clients vanish after the 101", True))
    if "t" in SCENARIO_IDS:
        panels.append(("t", "msgs_per_s", "(t) wss messages/s, 128 B window 16", True))
    if not panels:
        return False
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    script = [f"set terminal pngcairo size {cols * 420},{rows * 320} font 'Sans,9'",
              f"set output '{path}'",
              f"set multiplot layout {rows},{cols} title 'wsgate benchmark (median, min–max over rounds)'",
              "set style fill solid 0.6 border -1", "set boxwidth 0.6", "set yrange [0:*]",
              "set grid ytics", "unset key", "set xtics nomirror", "set offsets 0.5, 0.5, 0, 0"]
    for i, (sid, key, title, include_direct) in enumerate(panels):
        data = os.path.join(tmp, f"panel{i}.dat")
        rows_written = 0
        with open(data, "w") as f:
            for t in TARGETS:
                if (t == "direct" and not include_direct) or t not in summary[sid]:
                    continue
                m = summary[sid][t].get(key)
                if m:
                    color = {"wsgate": 0xD95F02, "wsgate-uring": 0xE7298A, "direct": 0x999999}.get(t, 0x4A7EBB)
                    f.write(f"{t} {m['median']} {m['min']} {m['max']} {color}\n")
                    rows_written += 1
        script.append(f"set title \"{title}\"")
        script.append("set format y '%.1s%c'" if include_direct else "set format y '%g'")
        if rows_written:
            script.append(f"plot '{data}' using 0:2:5:xtic(1) with boxes lc rgb variable, "
                          f"'' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0")
        else:
            script.append("plot NaN")
    script.append("unset multiplot")
    r = subprocess.run(["gnuplot"], input="\n".join(script) + "\n", text=True, capture_output=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr.strip()[-400:])
        return False
    return True

