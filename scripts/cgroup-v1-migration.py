#!/usr/bin/env python3
"""Cost of moving a process into a cgroup v1 hierarchy (write of its pid to cgroup.procs).

For each hierarchy (memory, pids, cpuacct, and the three in a row as presize's v1 backend
does), N samples: fork a child that waits on a pipe, time the parent's write of the child's
pid into <mount>/szmig-<pid>/cgroup.procs, move it back, reap it. Samples come
GAP seconds apart (0.1: the realistic case; 0: back to back). Prints median, p10, p90 in ms.
"""
import os, statistics, sys, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
GAP = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
ctrls = ["memory", "pids", "cpuacct"]
dirs = {}
for c in ctrls:
    d = f"/sys/fs/cgroup/{c}/szmig-{os.getpid()}"
    os.mkdir(d)
    dirs[c] = d

def one(cs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w); os.read(r, 1); os._exit(0)
    os.close(r)
    t0 = time.perf_counter()
    for c in cs:
        with open(dirs[c] + "/cgroup.procs", "w") as f:
            f.write(str(pid))
    dt = (time.perf_counter() - t0) * 1000
    for c in cs:
        with open(f"/sys/fs/cgroup/{c}/cgroup.procs", "w") as f:
            f.write(str(pid))
    os.write(w, b"x"); os.close(w); os.waitpid(pid, 0)
    return dt

try:
    for cs in [["memory"], ["pids"], ["cpuacct"], ctrls]:
        xs = []
        for _ in range(N):
            xs.append(one(cs)); time.sleep(GAP)
        xs.sort()
        print(f"{'+'.join(cs):<22} gap {GAP:>4} s: median {statistics.median(xs):7.3f} ms  p10 {xs[len(xs)//10]:7.3f}  p90 {xs[len(xs)*9//10]:7.3f}  (n={N})")
finally:
    for d in dirs.values():
        if os.path.isdir(d): os.rmdir(d)
