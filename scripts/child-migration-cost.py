#!/usr/bin/env python3
"""How long the job's child waits in its first write to a cgroup v1 `cgroup.procs`.

    scripts/child-migration-cost.py PRESIZE_BIN [N]

Runs `PRESIZE_BIN run -q -- /bin/true` under `strace -f -T` N times (default 20) with the
v1 warm-up on and N times with it off (PRESIZE_CGROUP_PREWARM=0), alternating, 100 ms
apart, and prints the median, p10 and p90 (ms) of the child's first `write(fd, "0", 1)`
(the placement into its first v1 cgroup). Uses the PRESIZE_DB / PRESIZE_MODEL_DIR / HOME
of the environment. Root on a cgroup v1 host; strace must be installed.
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def first_write_ms(trace):
    m = re.search(r'^(\d+) +execve\("/bin/true"', trace, re.M)
    if not m:
        sys.exit("child-migration-cost: no execve of /bin/true in the trace")
    child = m.group(1) + " "
    lines = trace.splitlines()
    for j, line in enumerate(lines):
        if line.startswith(child) and "write(" in line and '"0", 1' in line:
            done = re.search(r"<([0-9.]+)>$", line)
            if done:
                return float(done.group(1)) * 1000
            for later in lines[j + 1:]:
                if later.startswith(child) and "resumed" in later:
                    return float(re.search(r"<([0-9.]+)>$", later).group(1)) * 1000
    sys.exit("child-migration-cost: the child wrote no cgroup.procs (not a v1 host?)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    out = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = os.path.join(tmp, "trace")
        for _ in range(n):
            for mode in ("on", "off"):
                env = dict(os.environ)
                if mode == "off":
                    env["PRESIZE_CGROUP_PREWARM"] = "0"
                else:
                    env.pop("PRESIZE_CGROUP_PREWARM", None)
                time.sleep(0.1)
                subprocess.run(
                    ["strace", "-f", "-T", "-e", "trace=write,clone3,execve", "-o",
                     trace_file, binary, "run", "-q", "--", "/bin/true"],
                    env=env, check=True)
                with open(trace_file) as f:
                    out[mode].append(first_write_ms(f.read()))
    for mode, v in out.items():
        v.sort()
        print(f"warm-up {mode:3}: child's first cgroup.procs write: median "
              f"{statistics.median(v):.3f} ms  p10 {v[len(v) // 10]:.3f}  "
              f"p90 {v[int(len(v) * 0.9)]:.3f}  (n={len(v)})")


if __name__ == "__main__":
    main()
