"""The issues' targets for wsgate, checked against the medians of one run
(appended to scripts/bench's report)."""

from bench_lib.settings import SCENARIO_IDS, SCENARIOS, TARGETS, is_tls
from bench_lib.summary import best_peer, fmt, median_of


def resumption_goal_lines(summary):
    """Scenario w against its targets: CPU per resumed handshake at most the
    better peer's and at most 1/3 of wsgate's full handshake (v, same run)."""
    if "w" not in SCENARIO_IDS or "wsgate" not in TARGETS:
        return []
    mine = median_of(summary, "w", "wsgate", "cpu_us_per_op")
    peer, who = best_peer(summary, "w", "cpu_us_per_op", False)
    out = ["## Resumed TLS handshakes (w) against the targets", ""]
    if mine is None:
        return out + ["- w: CPU per resumed handshake not measured", ""]
    if peer is not None:
        out.append(f"- w: CPU {fmt(mine)} µs per resumed handshake vs best peer {who} {fmt(peer)} µs = "
                   f"{mine / peer:.2f}× (goal ≤ 1.00×): {'met' if mine <= peer else 'NOT met'}")
    full = median_of(summary, "v", "wsgate", "cpu_us_per_op") if "v" in SCENARIO_IDS else None
    if full:
        out.append(f"- w vs v: {fmt(mine)} µs resumed vs {fmt(full)} µs full = {mine / full:.2f}× "
                   f"(goal ≤ 0.33×): {'met' if mine <= full / 3 else 'NOT met'}")
    return out + [""]


# Issue 18 §5: both handshake shapes at most the better peer's CPU and
# within 10 % of the floor relay's, the back end still told with a close frame.
HANDSHAKE_SHAPES = ("d", "x")
FLOOR_SLACK = 1.10


def handshake_goal_lines(summary):
    """Scenarios d and x against issue 18 §5."""
    sids = [sid for sid in HANDSHAKE_SHAPES if sid in SCENARIO_IDS]
    if "wsgate" not in TARGETS or not sids:
        return []
    out = ["## Handshakes (d) and vanishing clients (x) against the targets", ""]
    for sid in sids:
        mine = median_of(summary, sid, "wsgate", "cpu_us_per_op")
        if mine is None:
            out.append(f"- {sid}: CPU per handshake not measured")
            continue
        peer, who = best_peer(summary, sid, "cpu_us_per_op", False)
        if peer is not None:
            out.append(f"- {sid}: CPU {fmt(mine)} µs per handshake vs best peer {who} {fmt(peer)} µs = "
                       f"{mine / peer:.2f}× (goal ≤ 1.00×): {'met' if mine <= peer else 'NOT met'}")
        floor = median_of(summary, sid, "floor", "cpu_us_per_op")
        if floor:
            out.append(f"- {sid}: vs floor {fmt(floor)} µs = {mine / floor:.2f}× (goal ≤ {FLOOR_SLACK:.2f}×): "
                       f"{'met' if mine <= FLOOR_SLACK * floor else 'NOT met'}")
        rate = median_of(summary, sid, "wsgate", "handshakes_per_s")
        peer_rate, who = best_peer(summary, sid, "handshakes_per_s", True)
        if rate and peer_rate:
            out.append(f"- {sid}: {fmt(rate)} handshakes/s vs best peer {who} {fmt(peer_rate)} = "
                       f"{rate / peer_rate:.2f}×")
    if "x" in sids:
        told = median_of(summary, "x", "wsgate", "backend_close_pct")
        codes = ", ".join(summary["x"].get("wsgate", {}).get("backend_close_codes", [])) or "none"
        if told is not None:
            out.append(f"- x: the back end got a close frame for {fmt(told)} % of the vanished clients "
                       f"(codes: {codes}; goal: 100 %): {'met' if told >= 99.9 else 'NOT met'}")
    return out + [""]


def h2_lines(summary):
    """Scenario h: each proxy's h2 streams against the same load on HTTP/1.1
    connections (h1), and wsgate's h2 against HAProxy's RFC 8441 front end."""
    if "h" not in SCENARIO_IDS or "h1" not in SCENARIO_IDS:
        return []
    out = ["## (h) WebSockets as h2 streams against HTTP/1.1 connections, same load", "",
           "| target | h2 msgs/s | HTTP/1.1 msgs/s | h2 CPU µs/msg | HTTP/1.1 CPU µs/msg | h2 ÷ HTTP/1.1 CPU |",
           "|---|---|---|---|---|---|"]
    for t in TARGETS:
        if t not in summary["h1"]:
            continue
        h2_rate, h1_rate = (median_of(summary, sid, t, "msgs_per_s") for sid in ("h", "h1"))
        h2_cpu, h1_cpu = (median_of(summary, sid, t, "cpu_us_per_op") for sid in ("h", "h1"))
        h2_cells = [fmt(h2_rate), fmt(h1_rate), fmt(h2_cpu), fmt(h1_cpu),
                    f"{h2_cpu / h1_cpu:.2f}×" if h2_cpu and h1_cpu else "–"]
        if t not in summary["h"]:
            h2_cells = ["n/a", fmt(h1_rate), "n/a", fmt(h1_cpu), "n/a"]
        out.append("| " + " | ".join([t] + h2_cells) + " |")
    mine = median_of(summary, "h", "wsgate", "cpu_us_per_op")
    theirs = median_of(summary, "h", "haproxy", "cpu_us_per_op")
    if mine and theirs:
        out += ["", f"- wsgate h2 ÷ HAProxy h2 (RFC 8441 front end), CPU per message: {mine / theirs:.2f}×"]
    return out + [""]


# Issue 18 §4: with io_uring, CPU per message in a and b at most 0.85 × the
# floor relay's, and strictly below the better peer's in every plain scenario.
URING_FLOOR_SHARE = 0.85
URING_FLOOR_SCENARIOS = ("a", "b")
PLAIN_SCENARIOS = ("a", "b", "c", "d", "x")


def verdict_line(summary, sid, target, against, who, goal, strict):
    """One goal line: <target>'s CPU per op in <sid> against <against>'s
    (<who> names it), goal <goal>× (strictly below when <strict>), with
    core 0's busy time per op compared the same way beside it."""
    mine = median_of(summary, sid, target, "cpu_us_per_op")
    theirs = median_of(summary, sid, against, "cpu_us_per_op")
    if mine is None or not theirs:
        return f"- {target} {sid}: CPU per op against {who} not measured"
    share = mine / theirs
    met = share < goal if strict else share <= goal
    core, core_theirs = (median_of(summary, sid, t, "core0_us_per_op") for t in (target, against))
    core_note = f"; core 0: {core / core_theirs:.2f}×" if core and core_theirs else ""
    return (f"- {target} {sid}: CPU {fmt(mine)} µs/op vs {who} {fmt(theirs)} µs = {share:.2f}× "
            f"(goal {'<' if strict else '≤'} {goal:.2f}×): {'met' if met else 'NOT met'}{core_note}")


def io_uring_goal_lines(summary):
    """wsgate-uring against issue 18 §4, and plain wsgate on the same lines
    for comparison."""
    targets = [t for t in ("wsgate-uring", "wsgate") if t in TARGETS]
    plain = [sid for sid in PLAIN_SCENARIOS if sid in SCENARIO_IDS]
    if "wsgate-uring" not in TARGETS or not plain:
        return []
    out = ["## io_uring (wsgate-uring) against the targets, plain wsgate for comparison", ""]
    for t in targets:
        if "floor" in TARGETS:
            out += [verdict_line(summary, sid, t, "floor", "floor", URING_FLOOR_SHARE, False)
                    for sid in URING_FLOOR_SCENARIOS if sid in plain]
        for sid in plain:
            who = best_peer(summary, sid, "cpu_us_per_op", False)[1]
            if who:
                out.append(verdict_line(summary, sid, t, who, f"best peer {who}", 1.0, True))
    return out + [""]


def goal_lines(summary):
    """The issues' wsgate targets, checked against the medians."""
    return (resumption_goal_lines(summary) + handshake_goal_lines(summary) + h2_lines(summary)
            + io_uring_goal_lines(summary) + plain_goal_lines(summary))


def plain_goal_lines(summary):
    """The first round's plain-scenario targets (d's is issue 18's now)."""
    if "wsgate" not in TARGETS or all(is_tls(sid) or SCENARIOS[sid]["kind"] == "storm" or sid in HANDSHAKE_SHAPES
                                      for sid in SCENARIO_IDS):
        return []
    out = ["## wsgate against the issue's targets", ""]
    for sid in SCENARIO_IDS:
        kind = SCENARIOS[sid]["kind"]
        if is_tls(sid) or kind == "storm" or sid in HANDSHAKE_SHAPES:
            continue
        if kind in ("echo", "handshake"):
            mine = median_of(summary, sid, "wsgate", "cpu_us_per_op")
            peer, who = best_peer(summary, sid, "cpu_us_per_op", False)
            if mine is None or peer is None:
                out.append(f"- {sid}: CPU per op not measured")
                continue
            verdict = "met" if mine <= 0.6 * peer else "NOT met"
            out.append(f"- {sid}: CPU {fmt(mine)} µs/op vs best peer {who} {fmt(peer)} µs "
                       f"= {mine / peer:.2f}× (goal ≤ 0.60×): {verdict}")
        else:
            mine = median_of(summary, sid, "wsgate", "rss_kib_per_session")
            if mine is None:
                out.append(f"- {sid}: RSS per session not measured")
                continue
            verdict = "met" if mine <= 2.0 else "NOT met"
            out.append(f"- {sid}: {fmt(mine)} KiB per idle session (goal ≤ 2 KiB): {verdict}")
            if sid == "f":
                cpu = median_of(summary, sid, "wsgate", "cpu_percent")
                opened = median_of(summary, sid, "wsgate", "open_sessions")
                if cpu is not None:
                    verdict = "met" if cpu < 5 else "NOT met"
                    out.append(f"- f: {fmt(opened)} sessions held, {fmt(cpu)} % of a core while idle "
                               f"(goal < 5 %): {verdict}")
    return out + [""]
