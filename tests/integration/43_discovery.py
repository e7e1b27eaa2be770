"""Dynamic pools: back ends discovered through DNS (A/AAAA and SRV) against a
real dnsmasq, re-resolved while wsgate runs. Back ends listen on 127.0.0.2,
127.0.0.3 ... (all of 127/8 is loopback); dnsmasq answers with TTL 0 and
wsgate re-resolves every 200 ms. Each test prints how many of its keys moved.

Drives proxy/runtime/resolver.cpp (c-ares on the main loop) and
Server::membership_changed() in proxy/runtime/server.cpp; the pure rules
(proxy/config/discovery.cpp) have unit tests in tests/unit/test_discovery.cpp.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from harness import (HOST, Dnsmasq, HostBackend, RawWs, Wsgate, admin_status,
                     check, check_between, check_eq, free_port, main,
                     new_tmpdir, raw_request, render_config, scrape, test,
                     upgrade_head, wait_until, whoami)

INTERVAL = "200ms"
KEYS = [f"k{i}" for i in range(200)]


def gateway(stack, dns, backends, hold="10s", health=None, algorithm="ring"):
    """A wsgate whose pool "chat" (hashed on ?key=) has the [[pool.backend]]
    tables <backends> (dicts), resolving through <dns>."""
    tmpdir = new_tmpdir("wsgate")
    port, admin_port = free_port(), free_port()
    pool = {"name": "chat", "hash": "query:key", "algorithm": algorithm, "backends": backends}
    if health:
        pool["health"] = health
    text = render_config(port, tmpdir, pools=[pool], admin=f"{HOST}:{admin_port}",
                         server={"drain_timeout": "1s"})
    text += (f'\n[resolver]\nservers = ["{HOST}:{dns.port}"]\ninterval = "{INTERVAL}"\n'
             f'timeout = "500ms"\nhold = "{hold}"\n')
    gw = Wsgate(text, tmpdir=tmpdir)
    gw.port, gw.admin_port = port, admin_port
    return stack.enter_context(gw)


def members(gw, pool="chat"):
    """{id: source} of <pool>'s back ends in /status."""
    for p in admin_status(gw.admin_port).get("pools", []):
        if p["name"] == pool:
            return {b["id"]: b.get("source", "") for b in p["backends"]}
    return {}


def wait_members(gw, ids, timeout=10.0, pool="chat"):
    """Waits until <pool> has exactly the back ends <ids>; returns the time it took."""
    started = time.monotonic()
    ok = wait_until(lambda: set(members(gw, pool)) == set(ids), timeout)
    check(ok, f"pool {pool}: members {sorted(members(gw, pool))}, expected {sorted(ids)}: {gw.diagnostics()}")
    return time.monotonic() - started


def owners(gw, keys=KEYS):
    """{key: id of the echo back end that serves a new session for it}
    (8 sessions at a time)."""
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(keys, pool.map(lambda k: whoami(gw.port, f"/?key={k}"), keys)))


def backends_on(stack, hosts, port, prefix="b"):
    """Echo back ends on 127.0.0.<h>:<port> for each h of <hosts>, id "b<h>"."""
    return {h: stack.enter_context(HostBackend(f"127.0.0.{h}", id=f"{prefix}{h}", port=port)) for h in hosts}


def moved(before, after):
    return {k for k in before if before[k] != after[k]}


@test(timeout=60)
def a_records_spread_and_stable_keys():
    """A name with three A records gives three back ends "IP:port" with the
    name as their source; 200 keys spread over all three and map the same
    way on every try, after a re-resolution, and after a SIGHUP reload that
    changes only an unrelated key (0 keys moved)."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3, 4], port)
        dns = stack.enter_context(Dnsmasq({"chat.test": ["127.0.0.4", "127.0.0.2", "127.0.0.3"]}))
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}])
        ids = [f"127.0.0.{h}:{port}" for h in (2, 3, 4)]
        wait_members(gw, ids)
        check_eq(set(members(gw).values()), {f"chat.test:{port}"}, "source of the discovered members")
        first = owners(gw)
        counts = {b: list(first.values()).count(b) for b in ("b2", "b3", "b4")}
        check(all(c >= 30 for c in counts.values()), f"200 keys over three back ends: {counts}")
        time.sleep(0.6)  # a few re-resolutions of an unchanged answer
        again = owners(gw)
        check_eq(len(moved(first, again)), 0, "keys moved between two passes")
        metrics = scrape(gw.admin_port)
        check_eq(metrics.get("wsgate_dns_members", pool="chat"), 3, "wsgate_dns_members")
        check(metrics.get("wsgate_dns_queries_total", result="ok") >= 4, "ok queries counted")
        check_eq(metrics.get("wsgate_pool_membership_changes_total", pool="chat"), 1, "one change: empty -> 3")
        # A reload that changes only an unrelated key moves nothing.
        since = gw.error_log_offset()
        gw.rewrite_config(open(gw.config_path).read().replace('idle = "5m"', 'idle = "4m"'))
        gw.reload()
        check(gw.wait_error_log(r"reloaded .*generation", 5.0, since) is not None, "reload logged")
        check_eq(set(members(gw)), set(ids), "members after the reload")
        after_reload = owners(gw)
        check_eq(len(moved(first, after_reload)), 0, "keys moved by the reload")
        return f"spread {counts}; keys moved: 0/200 on re-resolution, 0/200 on reload"


@test(timeout=60)
def member_added_moves_only_its_keys():
    """A fourth A record (ring pool): only keys that now belong to the new
    member move (about a quarter), none between the three old members; the change is
    logged as "pool chat: +IP:port" and used by new sessions within a few
    re-resolution intervals."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3, 4, 5], port)
        hosts = {"chat.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]}
        dns = stack.enter_context(Dnsmasq(hosts))
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}])
        wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3, 4)])
        before = owners(gw)
        since = gw.error_log_offset()
        changed_at = time.monotonic()
        dns.set_hosts({"chat.test": hosts["chat.test"] + ["127.0.0.5"]})
        # Time from the DNS change to a new session on the new member.
        used = None
        deadline = changed_at + 10
        i = 0
        while used is None and time.monotonic() < deadline:
            if whoami(gw.port, f"/?key={KEYS[i % len(KEYS)]}") == "b5":
                used = time.monotonic() - changed_at
            i += 1
        check(used is not None, f"no session reached the new member: {gw.diagnostics()}")
        wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3, 4, 5)])
        check(gw.wait_error_log(rf"(?m)pool chat: \+127\.0\.0\.5:{port}$", 5.0, since) is not None,
              f"change logged: {gw.diagnostics()}")
        after = owners(gw)
        gone = moved(before, after)
        check(all(after[k] == "b5" for k in gone), f"keys moved between old members: "
              f"{[(k, before[k], after[k]) for k in gone if after[k] != 'b5']}")
        check_between(len(gone), 25, 80, "keys moved to the new member (about 1/4 of 200)")
        return f"keys moved: {len(gone)}/200, all to the new member; DNS change -> new session on it: {used * 1000:.0f} ms"


@test(timeout=60)
def member_removed_is_drained_with_1012():
    """An A record removed: sessions on that member get close 1012 within
    the drain window, sessions on the others keep echoing, and new sessions
    for its keys go to their next back end; only its keys move."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3, 4], port)
        dns = stack.enter_context(Dnsmasq({"chat.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]}))
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}])
        wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3, 4)])
        before = owners(gw)
        sessions = {}
        for k in KEYS[:30]:
            ws = RawWs.connect(gw.port, f"/?key={k}")
            ws.send_text("whoami")
            sessions[k] = (ws, ws.recv_message()[1].decode().removeprefix("id:"))
        on_b3 = [k for k, (_, b) in sessions.items() if b == "b3"]
        check(on_b3 and len(on_b3) < 30, f"sessions spread: {[b for _, b in sessions.values()]}")
        since = gw.error_log_offset()
        dns.set_hosts({"chat.test": ["127.0.0.2", "127.0.0.4"]})
        check(gw.wait_error_log(rf"(?m)pool chat: -127\.0\.0\.3:{port}$", 5.0, since) is not None,
              f"removal logged: {gw.diagnostics()}")
        for k in on_b3:
            code, _ = sessions[k][0].recv_close(timeout=5.0)
            check_eq(code, 1012, f"close code of session {k} on the removed member")
        for k, (ws, b) in sessions.items():
            if b == "b3":
                continue
            ws.send_text("still there")
            reply = ws.recv_message(timeout=5.0)
            check(reply is not None and reply[1] == b"still there", f"session {k} on {b} after the removal: {reply!r}")
            ws.close()
        after = owners(gw)
        gone = moved(before, after)
        check_eq({before[k] for k in gone}, {"b3"}, "owners of the keys that moved")
        check_eq(len(gone), list(before.values()).count("b3"), "every key of the removed member moved")
        return f"{len(on_b3)} sessions drained with 1012; keys moved: {len(gone)}/200 (all from the removed member)"


@test(timeout=60)
def srv_ports_and_weights():
    """SRV records give each target:port a back end with the record's
    weight (0 counts as 1); a record of a higher priority value is a backup
    and unused; new SRV records are followed."""
    with ExitStack() as stack:
        p1, p2, p3 = free_port(), free_port(), free_port()
        stack.enter_context(HostBackend("127.0.0.2", id="light", port=p1))
        stack.enter_context(HostBackend("127.0.0.3", id="heavy", port=p2))
        stack.enter_context(HostBackend("127.0.0.4", id="backup", port=p3))
        srv = [("_ws._tcp.chat.test", "t2.test", p1, 0, 0),
               ("_ws._tcp.chat.test", "t3.test", p2, 0, 3),
               ("_ws._tcp.chat.test", "t4.test", p3, 10, 100)]
        hosts = {"t2.test": ["127.0.0.2"], "t3.test": ["127.0.0.3"], "t4.test": ["127.0.0.4"]}
        dns = stack.enter_context(Dnsmasq(hosts, srv))
        gw = gateway(stack, dns, [{"srv": "_ws._tcp.chat.test"}])
        wait_members(gw, [f"127.0.0.2:{p1}", f"127.0.0.3:{p2}"])
        check_eq(set(members(gw).values()), {"_ws._tcp.chat.test"}, "source of the SRV members")
        first = owners(gw)
        heavy = list(first.values()).count("heavy")
        check_between(heavy, 200 * 0.6, 200 * 0.88, "keys on the weight-3 member (3/4 of 200 expected)")
        # The backup takes over when the priority-0 records are gone.
        dns.set_srv([srv[2]])
        wait_members(gw, [f"127.0.0.4:{p3}"])
        after = owners(gw, KEYS[:20])
        check_eq(set(after.values()), {"backup"}, "owners once only the backup record is left")
        return f"weights 1:3 -> {200 - heavy}:{heavy} of 200 keys; keys moved to the backup: 20/20"


@test(timeout=60)
def dns_server_stopped_changes_nothing_for_hold():
    """dnsmasq killed: for `hold` (3 s) the pool keeps its members and every
    key its back end, with a warning and failed queries counted; after hold
    the pool is empty (503); dnsmasq back: served again without a reload."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3], port)
        hosts = {"chat.test": ["127.0.0.2", "127.0.0.3"]}
        dns = stack.enter_context(Dnsmasq(hosts))
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}], hold="3s")
        ids = [f"127.0.0.{h}:{port}" for h in (2, 3)]
        wait_members(gw, ids)
        before = owners(gw, KEYS[:50])
        since = gw.error_log_offset()
        dns.kill()
        stopped = time.monotonic()
        check(gw.wait_error_log(r"resolver: chat\.test:\d+: \w+; keeping the last 2 member", 3.0, since) is not None,
              f"warning while the resolver fails: {gw.diagnostics()}")
        during = owners(gw, KEYS[:50])
        check(time.monotonic() - stopped < 2.5, "the check ran within hold")
        check_eq(set(members(gw)), set(ids), "members while the DNS server is down")
        check_eq(len(moved(before, during)), 0, "keys moved while the DNS server is down")
        metrics = scrape(gw.admin_port)
        failed = sum(metrics.get("wsgate_dns_queries_total", result=r) for r in ("refused", "timeout", "error"))
        check(failed >= 2, f"failed queries counted: {failed}")
        # Hold expired: the members leave.
        wait_members(gw, [], timeout=8.0)
        status = raw_request(gw.port, upgrade_head("/?key=k1", f"{HOST}:{gw.port}"))[0]
        check_eq(status, 503, "status once hold expired")
        dns.start()
        wait_members(gw, ids)
        back = owners(gw, KEYS[:50])
        check_eq(len(moved(before, back)), 0, "keys moved once the DNS server is back")
        return f"keys moved during the outage: 0/50; emptied after hold; {failed:.0f} failed queries"


@test(timeout=60)
def name_missing_at_start_gives_503_then_serves():
    """A name that does not resolve at start: wsgate starts, its routes
    answer 503; once the name appears the pool is served without any reload."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3], port)
        dns = stack.enter_context(Dnsmasq({}))
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}])
        check(gw.wait_error_log(r"resolver: chat\.test:\d+: nxdomain; no member from it yet", 5.0) is not None,
              f"missing name logged: {gw.diagnostics()}")
        status = raw_request(gw.port, upgrade_head("/?key=k1", f"{HOST}:{gw.port}"))[0]
        check_eq(status, 503, "status of a route to the unresolved pool")
        dns.set_hosts({"chat.test": ["127.0.0.2", "127.0.0.3"]})
        took = wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3)])
        check(whoami(gw.port, "/?key=k1") in ("b2", "b3"), "served once the name resolves")
        check_eq(admin_status(gw.admin_port)["reloads"]["success"], 0, "reloads")
        return f"503 before, served {took * 1000:.0f} ms after the name appeared"


@test(timeout=60)
def two_instances_agree_on_every_key():
    """Two wsgate processes with the same configuration and DNS: the same
    back end for each of 200 keys (Maglev pool), before and after a member
    joins (records listed in a different order do not matter)."""
    with ExitStack() as stack:
        port = free_port()
        backends_on(stack, [2, 3, 4, 5], port)
        dns = stack.enter_context(Dnsmasq({"chat.test": ["127.0.0.4", "127.0.0.2", "127.0.0.3"]}))
        one = gateway(stack, dns, [{"address": f"chat.test:{port}"}], algorithm="maglev")
        two = gateway(stack, dns, [{"address": f"chat.test:{port}"}], algorithm="maglev")
        for gw in (one, two):
            wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3, 4)])
        a, b = owners(one), owners(two)
        check_eq([k for k in KEYS if a[k] != b[k]], [], "keys on which the two instances disagree")
        dns.set_hosts({"chat.test": ["127.0.0.5", "127.0.0.3", "127.0.0.2", "127.0.0.4"]})
        for gw in (one, two):
            wait_members(gw, [f"127.0.0.{h}:{port}" for h in (2, 3, 4, 5)])
        a2, b2 = owners(one), owners(two)
        check_eq([k for k in KEYS if a2[k] != b2[k]], [], "disagreements after the change")
        return f"agree on 200/200 keys before and after; keys moved by the change: {len(moved(a, a2))}/200"


@test(timeout=60)
def health_checks_skip_a_stopped_discovered_member():
    """Active TCP checks apply to discovered members: the one whose server
    is stopped is marked down in /status and no new session goes to it,
    while it stays a member (its DNS record is still there)."""
    with ExitStack() as stack:
        port = free_port()
        servers = backends_on(stack, [2, 3, 4], port)
        dns = stack.enter_context(Dnsmasq({"chat.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]}))
        health = {"type": "tcp", "interval": "200ms", "timeout": "500ms", "rise": 1, "fall": 1}
        gw = gateway(stack, dns, [{"address": f"chat.test:{port}"}], health=health)
        ids = [f"127.0.0.{h}:{port}" for h in (2, 3, 4)]
        wait_members(gw, ids)
        before = owners(gw, KEYS[:100])
        servers[3].kill()
        down = f"127.0.0.3:{port}"
        ok = wait_until(lambda: any(b["id"] == down and not b["up"]
                                    for p in admin_status(gw.admin_port)["pools"] for b in p["backends"]), 5.0)
        check(ok, f"{down} marked down: {admin_status(gw.admin_port)}")
        check_eq(set(members(gw)), set(ids), "members (the DNS record stays)")
        after = owners(gw, KEYS[:100])
        check("b3" not in after.values(), "no session on the stopped member")
        gone = moved(before, after)
        check_eq({before[k] for k in gone}, {"b3"}, "owners of the keys that moved")
        return f"keys moved: {len(gone)}/100 (all from the stopped member)"


if __name__ == "__main__":
    main()
