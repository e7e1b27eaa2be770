"""What a new user hits first: `make` on a machine without the build
libraries stops with ONE line naming scripts/install-deps (or make deps)
instead of pages of pkg-config and compiler errors, while the goals that
install first (deps, test, asan) still get to run it. The missing libraries
are simulated with PKG_CONFIG_LIBDIR pointing at an empty directory, and
`make -n` runs nothing."""

import os
import subprocess
import tempfile

from harness import check, check_eq, main, test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make(*goals, env_extra=None):
    with tempfile.TemporaryDirectory(prefix="wsgate-make-") as empty:
        env = dict(os.environ, PKG_CONFIG_LIBDIR=empty, MAKEFLAGS="", MFLAGS="")
        env.pop("PKG_CONFIG_PATH", None)
        env.update(env_extra or {})
        proc = subprocess.run(["make", "--no-print-directory", "-n", f"BUILD={empty}/build", *goals], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr


@test(timeout=60)
def make_without_libraries_says_one_line():
    """`make`, `make all`, `make unit` and `make install` fail with exactly
    one stderr line that names scripts/install-deps and make deps."""
    for goals in ((), ("all",), ("unit",), ("install",)):
        code, out, err = make(*goals)
        check(code != 0, f"make {' '.join(goals)} succeeded without the libraries")
        lines = err.strip().splitlines()
        check_eq(len(lines), 1, f"stderr lines of make {' '.join(goals)}: {lines}")
        check("run scripts/install-deps (or make deps) first" in lines[0], f"message: {lines[0]}")
        check_eq(out, "", f"make {' '.join(goals)} printed commands")
    return lines[0]


@test(timeout=60)
def install_goals_still_install_first():
    """`make deps`, `make test` and `make asan` are not stopped: their first
    command is scripts/install-deps (the check runs again in the sub-make,
    after the install)."""
    for goal in ("deps", "test", "asan"):
        code, out, err = make(goal)
        first = out.strip().splitlines()[0] if out.strip() else ""
        check_eq(first, "scripts/install-deps", f"first command of make -n {goal} (stderr {err.strip()[:200]!r})")
    return "deps, test and asan start with scripts/install-deps"


if __name__ == "__main__":
    main()
