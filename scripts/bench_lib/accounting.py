"""What a proxy costs over the measured window, seen from outside the load
generator: every task of its processes (io_uring's kernel workers iou-wrk-*
and iou-sqp-* are tasks of the process too), and core 0's total busy time
from /proc/stat, so that no work hides in a kernel thread or a softirq.

ws_loadgen --cpu-pid sums /proc/PID/task/*/schedstat when its window opens
and again when it closes, listing the tasks afresh each time: a task that
appears during the window counts in full. A task that exits during the
window is missing from the second sum, so its time is lost and, if it was
there when the window opened, its earlier time is subtracted too. The
WindowSampler below lists the tasks every SAMPLE_INTERVAL s over the window
and keeps the last schedstat figure of each; for a task gone by the end,
adding that last figure to the load generator's sum undoes both errors
(whatever it ran after its last sample, under SAMPLE_INTERVAL s, stays
lost; io_uring's io-wq workers exit only after seconds idle, so they lose
nothing). The thread-group figure of /proc/PID/stat (utime + stime, which
keeps the time of exited threads, in clock ticks) is kept beside it as a
cross-check."""

import os
import threading
import time

SAMPLE_INTERVAL = 0.05
TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
# /proc/stat columns of busy time: user nice system idle iowait irq softirq steal.
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
CORE = "cpu0"


def core_busy_ns(core=CORE):
    """user+nice+system+irq+softirq+steal of <core> in /proc/stat (guest time
    is inside user already), in ns."""
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == core:
                return sum(int(fields[1 + i]) for i in BUSY_COLUMNS) * TICK_NS
    raise RuntimeError(f"/proc/stat has no {core} line")


def tasks(pid):
    """{tid: (comm, ns on CPU)} of every task of <pid>; {} if it is gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = (comm, ns)
    return out


def group_cpu_ns(pid):
    """utime + stime of <pid>'s thread group (exited threads included), in ns."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * TICK_NS


class WindowSampler(threading.Thread):
    """Samples the tasks of <pids> from <start> to <start> + <duration>
    (time.monotonic()), and core 0's busy time at both ends."""

    def __init__(self, pids, start, duration):
        super().__init__(daemon=True)
        self.pids, self.start_at, self.end_at = pids, start, start + duration
        self.seen = {}        # (pid, tid) -> [comm, ns at first sample in the window, ns at last sample]
        self.at_end = set()   # (pid, tid) alive at the last sample
        self.core_ns = self.group_ns = self.window_s = None
        self.halt = threading.Event()

    def sample(self):
        now = set()
        for pid in self.pids:
            for tid, (comm, ns) in tasks(pid).items():
                key = (pid, tid)
                now.add(key)
                if key in self.seen:
                    self.seen[key][2] = ns
                else:
                    self.seen[key] = [comm, ns, ns]
        return now

    def run(self):
        if self.halt.wait(max(0.0, self.start_at - time.monotonic())):
            return
        began = time.monotonic()
        core0, group0 = core_busy_ns(), sum(group_cpu_ns(p) for p in self.pids)
        self.sample()
        # Tasks that were there before the window opened count from here.
        while not self.halt.wait(min(SAMPLE_INTERVAL, max(0.0, self.end_at - time.monotonic()))):
            alive = self.sample()
            if time.monotonic() >= self.end_at:
                self.at_end = alive
                self.core_ns = core_busy_ns() - core0
                self.group_ns = sum(group_cpu_ns(p) for p in self.pids) - group0
                self.window_s = time.monotonic() - began
                return

    def result(self, ops, elapsed_s):
        """Fields for the run's result: tasks seen, iou-* tasks, tasks that
        exited and the CPU to add for them, core 0 µs per op (its busy time
        over this window, scaled to the load generator's <elapsed_s> in
        which <ops> operations completed) and the thread-group cross-check.
        {} when the window did not complete."""
        if self.window_s is None:
            return {}
        exited = [v for k, v in self.seen.items() if k not in self.at_end]
        out = {"tasks_seen": len(self.seen),
               "iou_threads": sum(1 for comm, _, _ in self.seen.values() if comm.startswith("iou-")),
               "iou_thread_names": sorted({comm for comm, _, _ in self.seen.values() if comm.startswith("iou-")}),
               "tasks_exited": len(exited),
               "exited_task_cpu_ns": sum(last for _, _, last in exited)}
        if ops and elapsed_s:
            scale = elapsed_s / self.window_s
            out["core0_us_per_op"] = self.core_ns * scale / 1000 / ops
            out["group_cpu_us_per_op"] = self.group_ns * scale / 1000 / ops
        return out
