#!/usr/bin/env python3
"""Whole-process latency of two commands, measured alternately in one run.

    scripts/bench-pairs.py [--pairs N] [--gap S] [--cold DB] -- A... ::: B...

Runs A, sleeps GAP (default 0.1 s), runs B, sleeps GAP, ... N times (default 100), so both
commands see the same host load. Each sample is the wall time from spawning the process to
reaping it (Python's subprocess.run, the same overhead on both sides). With --cold DB, before
every run the database file and its -wal/-shm are written back and evicted from the page cache
with posix_fadvise(POSIX_FADV_DONTNEED) (the clean pages go; the next read comes from disk).
`{i}` in an argument is replaced by the pair number (e.g. a fresh job key per pair).
Prints the median, p10 and p90 of A, B, and of the per-pair difference A - B and ratio A / B.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time


def evict(db):
    for suffix in ("", "-wal", "-shm"):
        p = db + suffix
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def once(cmd, i, cold):
    argv = [a.replace("{i}", str(i)) for a in cmd]
    if cold:
        evict(cold)
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"bench-pairs: {argv} exited {r.returncode}: {r.stderr.decode()[-300:]}")
    return dt * 1000.0


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--gap", type=float, default=0.1)
    ap.add_argument("--cold", default=None)
    ap.add_argument("cmds", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmds = a.cmds[1:] if a.cmds and a.cmds[0] == "--" else a.cmds
    if ":::" not in cmds:
        sys.exit("bench-pairs: give A ::: B")
    k = cmds.index(":::")
    ca, cb = cmds[:k], cmds[k + 1:]
    once(ca, "warm", None)
    once(cb, "warm", None)
    xa, xb = [], []
    for i in range(a.pairs):
        xa.append(once(ca, i, a.cold))
        time.sleep(a.gap)
        xb.append(once(cb, i, a.cold))
        time.sleep(a.gap)
    d = [x - y for x, y in zip(xa, xb)]
    r = [x / y for x, y in zip(xa, xb)]
    f = lambda v: f"median {statistics.median(v):8.2f}  p10 {q(v, .1):8.2f}  p90 {q(v, .9):8.2f}"
    print(f"A ms   {f(xa)}   {' '.join(ca)}")
    print(f"B ms   {f(xb)}   {' '.join(cb)}")
    print(f"A-B ms {f(d)}")
    print(f"A/B    {f(r)}   ({a.pairs} pairs, gap {a.gap} s, cold={'yes' if a.cold else 'no'})")


if __name__ == "__main__":
    main()
