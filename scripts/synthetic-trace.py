#!/usr/bin/env python3
"""Write a synthetic Nextflow trace shaped like nf-core/mag: PROCESSES task types of ROWS
tasks each (default 8 x 5,000 = 40,000 rows), peak memory following the input size with
log-normal noise (some types size-independent, one plateauing), seeded and deterministic.

    scripts/synthetic-trace.py OUT.csv [ROWS_PER_PROCESS=5000] [PROCESSES=8] [SEED=7]

Used by BENCHMARKS.md to time `presize replay` at the mag trace's scale (the real mag trace
is not in ../shared/data).
"""
import math
import random
import sys

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
procs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
cols = ["task_id", "process", "status", "cpus", "memory", "realtime", "rss", "peak_rss", "rchar"]
with open(out, "w") as f:
    f.write(",".join(cols) + "\n")
    tid = 0
    for p in range(procs):
        kind = p % 4  # 0 linear, 1 log-log, 2 constant, 3 plateau
        base = 2e8 * (1 + p)
        for _ in range(rows):
            tid += 1
            x = math.exp(rng.uniform(math.log(1e7), math.log(2e10)))
            if kind == 0:
                y = base + 0.4 * x
            elif kind == 1:
                y = base * (x / 1e7) ** 0.35
            elif kind == 2:
                y = base * 3
            else:
                y = min(base + 0.5 * x, 11e9)
            y *= math.exp(rng.gauss(0, 0.08))
            t = int(60000 + x / 2e5 * math.exp(rng.gauss(0, 0.2)))
            f.write(f"{tid},PROC_{p},COMPLETED,4,17179869184,{t},{int(y)},{int(y * 1.02)},{int(x)}\n")
