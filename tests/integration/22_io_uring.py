"""[server] io = "io_uring" (issue 18, part 4): each worker sets up its ring
at start (proxy/runtime/worker.cpp, proxy/runtime/uring.cpp); where the
kernel refuses io_uring, each worker says so once and tunnels run on epoll.

The refusal is made real with a seccomp filter installed in wsgate's process
before exec: io_uring_setup(2) fails with EPERM, as it does under
kernel.io_uring_disabled = 2 or a container runtime's default profile."""

import ctypes
import platform
import struct

from harness import Backend, Wsgate, check, check_eq, main, run_async, test, ws_connect

WARNING = "io_uring cannot be set up"

# x86_64 numbers (linux/audit.h, asm/unistd_64.h, linux/seccomp.h, linux/filter.h).
AUDIT_ARCH_X86_64 = 0xC000003E
NR_IO_URING_SETUP = 425
EPERM = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def refuse_io_uring():
    """In the child before exec: io_uring_setup() fails with EPERM from now
    on, in this process and what it executes; every other call is allowed."""
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),                         # seccomp_data.arch
        (BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),            # another ABI: allow
        (BPF_LD_W_ABS, 0, 0, 0),                         # seccomp_data.nr
        (BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = SockFprog(len(program), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def echo_works(gw):
    async def go():
        async with ws_connect(gw.port) as ws:
            for i in range(20):
                await ws.send(f"message {i}")
                check_eq(await ws.recv(), f"message {i}", "echo through the tunnel")
    run_async(go())


@test
def refused_io_uring_warns_once_per_worker_and_tunnels_run_on_epoll():
    check(platform.machine() == "x86_64", f"the seccomp filter is written for x86_64, not {platform.machine()}")
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "server": {"workers": 2, "io": "io_uring"}}, preexec=refuse_io_uring) as gw:
        check(gw.wait_error_log(WARNING, timeout=5), f"no warning: {gw.diagnostics()}")
        echo_works(gw)
        echo_works(gw)
        lines = [l for l in gw.error_log().splitlines() if WARNING in l]
        check_eq(len(lines), 2, f"warnings (one per worker): {lines}")
        check("Operation not permitted" in lines[0], f"the reason is named: {lines[0]}")
        check("tunnels use epoll" in lines[0], f"the consequence is named: {lines[0]}")
        check("worker 0" in "".join(lines) and "worker 1" in "".join(lines), f"both workers: {lines}")
    return lines[0]


@test
def available_io_uring_sets_up_without_a_warning():
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "server": {"workers": 2, "io": "io_uring"}}) as gw:
        echo_works(gw)
        check(WARNING not in gw.error_log(), f"unexpected warning: {gw.diagnostics()}")


@test
def epoll_never_touches_io_uring():
    """epoll (the default, named here so that a suite-wide io override
    leaves it) does not even try: under the filter, no warning."""
    with Backend("echo", id="b1") as b, \
            Wsgate({"backends": [b], "server": {"workers": 2, "io": "epoll"}}, preexec=refuse_io_uring) as gw:
        echo_works(gw)
        check(WARNING not in gw.error_log(), f"unexpected warning: {gw.diagnostics()}")


if __name__ == "__main__":
    main()
