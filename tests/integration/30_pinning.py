"""Pinning: the consistent hash sends one key to one back end, on every key
kind, and a back end going away moves only the keys it owned."""

from contextlib import ExitStack

from harness import (OP_TEXT, Backend, RawWs, Wsgate, check, check_eq, main,
                     test)


def whoami(port, path="/", extra=()):
    """The id of the back end that answers a fresh session."""
    ws = RawWs.connect(port, path, extra=extra)
    try:
        ws.send_text("whoami")
        op, payload = ws.recv_message(timeout=5)
        check_eq(op, OP_TEXT, "answer opcode")
        ws.send_close(1000)
        ws.recv_close(timeout=5)
        return payload.decode().removeprefix("id:")
    finally:
        ws.close()


def three_backends(stack):
    return [stack.enter_context(Backend("echo", id=f"b{i}")) for i in (1, 2, 3)]


def pinning_case(hash_spec, session_for_key):
    """20 sessions of one key (varying what is not the key) land
    on one back end; 30 distinct keys use more than one back end.
    <session_for_key>(key, i) returns (path, extra headers)."""
    with ExitStack() as stack:
        backends = three_backends(stack)
        gw = stack.enter_context(Wsgate({"pools": [
            {"name": "main", "hash": hash_spec, "backends": backends}]}))
        ids = {whoami(gw.port, *session_for_key("alice", i))
               for i in range(20)}
        check_eq(len(ids), 1, f"{hash_spec}: back ends for one key over 20 sessions ({ids})")
        spread = {whoami(gw.port, *session_for_key(f"user-{k}", 0)) for k in range(30)}
        check(len(spread) >= 2, f"{hash_spec}: 30 keys all went to {spread}")
        return f"key alice -> {ids.pop()}, 30 keys over {len(spread)} back ends"


@test
def client_ip_pins():
    with ExitStack() as stack:
        backends = three_backends(stack)
        gw = stack.enter_context(Wsgate({"backends": backends}))
        ids = {whoami(gw.port) for _ in range(20)}
        check_eq(len(ids), 1, f"back ends for 127.0.0.1 over 20 sessions ({ids})")


@test
def header_key_pins():
    return pinning_case("header:X-User",
                        lambda key, i: (f"/p{i}", [("X-User", key)]))


@test
def cookie_key_pins():
    return pinning_case("cookie:sid",
                        lambda key, i: ("/", [("Cookie", f"theme=t{i}; sid={key}; lang=en")]))


@test
def query_key_pins():
    return pinning_case("query:room",
                        lambda key, i: (f"/chat?n={i}&room={key}&x=1", []))


@test
def path_key_pins():
    return pinning_case("path", lambda key, i: (f"/rooms/{key}", [("X-N", str(i))]))


def removal_case(algorithm):
    with ExitStack() as stack:
        backends = three_backends(stack)
        gw = stack.enter_context(Wsgate({
            "pools": [{"name": "main", "hash": "header:X-User", "algorithm": algorithm,
                       "backends": backends}],
            "timeouts": {"connect": "1s"}}))
        keys = [f"user-{k}" for k in range(30)]
        before = {k: whoami(gw.port, "/", [("X-User", k)]) for k in keys}
        owned = sum(1 for v in before.values() if v == "b2")
        check(0 < owned < 30, f"b2 owned {owned} of 30 keys; cannot test removal")
        backends[1].stop()
        after = {k: whoami(gw.port, "/", [("X-User", k)]) for k in keys}
        moved = [k for k in keys if before[k] != "b2" and after[k] != before[k]]
        check_eq(moved, [], "keys moved although their back end stayed")
        check(all(after[k] in ("b1", "b3") for k in keys),
              f"a key still reached b2 or nothing: {after}")
        return f"{owned} of 30 keys moved off b2, the other {30 - owned} stayed"


@test
def ring_removal_keeps_other_keys():
    return removal_case("ring")


@test
def maglev_removal_keeps_other_keys():
    return removal_case("maglev")


@test
def two_processes_agree():
    """Several wsgate instances behind an L4 balancer agree on every key's
    back end without talking to each other: the mapping depends only on the
    configuration (here even listed in another order)."""
    with ExitStack() as stack:
        backends = three_backends(stack)
        for algorithm in ("ring", "maglev"):
            first = stack.enter_context(Wsgate({"pools": [
                {"name": "main", "hash": "header:X-User", "algorithm": algorithm, "backends": backends}]}))
            second = stack.enter_context(Wsgate({"pools": [
                {"name": "main", "hash": "header:X-User", "algorithm": algorithm,
                 "backends": list(reversed(backends))}]}))
            keys = [f"user-{k}" for k in range(40)]
            a = {k: whoami(first.port, "/", [("X-User", k)]) for k in keys}
            b = {k: whoami(second.port, "/", [("X-User", k)]) for k in keys}
            check_eq(a, b, f"{algorithm}: back end per key in two processes")
            check(len(set(a.values())) == 3, f"{algorithm}: 40 keys did not reach all 3 back ends: {a}")
        return "40 keys, ring and maglev: identical choices in two processes"


if __name__ == "__main__":
    main()
