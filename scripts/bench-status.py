#!/usr/bin/env python3
"""Benchmark `presize status` on a 1M-row store against a 1k-row store.

Usage: scripts/bench-status.py PRESIZE_BIN WORKDIR [ROWS] [ROUNDS]

Builds two stores in WORKDIR with the presize binary's own migrations (it runs
`presize status` once on each to create them), then fills them by SQL:
  - ROWS (default 1,000,000) resp. 1,000 settled resource_prediction rows over 5,000 job
    keys, one every 30 s, with every column status reads filled;
  - the same live ledger on this host: 8 running and 24 waiting reservations (holder pid 1,
    alive), pointing at the newest rows, which are left unsettled;
  - 200 model versions (one promoted), 2,000 bursts (the newest in force), 20,000 recorded
    forecasts.
Then runs `presize status --json` ROUNDS times (default 40) on each store, alternating big
and small, and prints the median and fastest wall clock of each and their ratio. With
valgrind installed it also prints callgrind's instruction count of one run on each store.
"""
import os
import statistics
import subprocess
import sys
import time

import sqlite3


def make(binary, db, rows):
    env = dict(os.environ, PRESIZE_DB=db, PRESIZE_CONFIG="",
               PRESIZE_MODEL_DIR=db + ".models", PRESIZE_HOST_BUDGET_MB="64000")
    if os.path.exists(db):
        os.remove(db)
    subprocess.run([binary, "status"], env=env, check=True, stdout=subprocess.DEVNULL)
    host = open("/proc/sys/kernel/hostname").read().strip()
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    t0 = 1.75e9
    c.executescript(f"""
    BEGIN;
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows})
    INSERT INTO resource_prediction (job_id, job_key, runtime, script_path, command, features,
        schema_hash, predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_rss_mb,
        confidence, source, memory_limit_mb, timeout_s, applied_memory_mb, applied_timeout_s,
        enforced, memory_enforced, backend, priority, attempt, actual_cpu_s, actual_rss_mb,
        actual_wall_s, outcome, model_version, host, predicted_at, started_at, settled_at,
        memory_source, timeout_source, evidence, limit_reason)
    SELECT 'job-' || i, 'key-' || (i % 5000), 'python', '/data/jobs/s' || (i % 5000) || '.py',
        '["python3","s.py"]', '{{"input_total_mb":' || (i % 977) || '}}', 'h',
        10.0 + i % 100, 200.0 + i % 3000, 60.0 + i % 600, 300.0 + i % 3000, 0.7, 'model',
        512 + i % 4096, 600, 512 + i % 4096, 600, 1, 1, 'cgroup-v1', 'normal', 1,
        9.0 + i % 100, 180.0 + i % 3000, 55.0 + i % 600, 'ok', 'gbt-1', '{host}',
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 30 - 60, 'unixepoch'),
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 30 - 55, 'unixepoch'),
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 30, 'unixepoch'),
        'predicted', 'predicted', CASE i % 3 WHEN 0 THEN 'history' WHEN 1 THEN 'model' ELSE 'novel' END,
        'key history, q0.95'
    FROM seq;
    UPDATE resource_prediction SET outcome = NULL, settled_at = NULL, actual_cpu_s = NULL,
        actual_rss_mb = NULL, actual_wall_s = NULL WHERE id > {rows - 32};
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 32)
    INSERT INTO reservation (row_id, host, pid, pid_start, memory_mb, predicted_mb, priority,
        state, created_at, admitted_at)
    SELECT {rows - 32} + i, '{host}', 1, NULL, 1000 + i, 700.0 + i, i % 3,
        CASE WHEN i <= 8 THEN 'running' ELSE 'waiting' END,
        strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        CASE WHEN i <= 8 THEN strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END
    FROM seq;
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 200)
    INSERT INTO model_version (version, path, trained_at, rows, schema_hash, metrics, promoted,
        promoted_at)
    SELECT 'gbt-' || i, '/m/gbt-' || i, strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 604800, 'unixepoch'),
        1000 * i, 'h', '{{}}', i = 200, CASE WHEN i = 200 THEN
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 604800, 'unixepoch') END
    FROM seq;
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 2000)
    INSERT INTO burst (host, factor, source, who, why, started_at, until)
    SELECT '{host}', 1.2, 'auto', 'auto', 'queue',
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 3600, 'unixepoch'),
        CASE WHEN i = 2000 THEN '2999-01-01T00:00:00.000Z'
             ELSE strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 3600 + 1800, 'unixepoch') END
    FROM seq;
    WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 20000)
    INSERT INTO forecast_record (made_at, recorded_at, trigger, horizon_hours, target_end, method,
        trend_jobs, predicted_jobs, jobs_lo, jobs_hi, interval_nominal, interval_source,
        predicted_gbh, gbh_lo, gbh_hi, peak_concurrent_mb, budget_mb)
    SELECT strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 1200, 'unixepoch'),
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 1200, 'unixepoch'), 'timer', 1,
        strftime('%Y-%m-%dT%H:%M:%fZ', {t0} + i * 1200 + 3600, 'unixepoch'), 'damped-trend',
        100, 100, 80, 120, 0.8, 'model', 10, 8, 12, 30000, 64000
    FROM seq;
    COMMIT;
    """)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return env


def run(binary, env):
    t = time.perf_counter()
    subprocess.run([binary, "status", "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    binary, work = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    os.makedirs(work, exist_ok=True)
    t = time.perf_counter()
    big = make(binary, os.path.join(work, "big.db"), rows)
    print(f"built {rows} rows in {time.perf_counter() - t:.1f} s "
          f"({os.path.getsize(os.path.join(work, 'big.db')) / 2**20:.0f} MiB)")
    small = make(binary, os.path.join(work, "small.db"), 1000)
    out = subprocess.run([binary, "status", "--json"], env=big, check=True,
                         capture_output=True, text=True).stdout
    print("status of the big store:", out.count('"reservation_id"'), "jobs listed")
    for env in (big, small):
        for _ in range(3):
            run(binary, env)
    tb, ts = [], []
    for _ in range(rounds):
        tb.append(run(binary, big))
        ts.append(run(binary, small))
    mb, ms = statistics.median(tb), statistics.median(ts)
    print(f"presize status --json, {rounds} runs each, alternating:")
    print(f"  {rows}-row store: median {mb * 1000:.1f} ms, fastest {min(tb) * 1000:.1f} ms")
    print(f"  1000-row store: median {ms * 1000:.1f} ms, fastest {min(ts) * 1000:.1f} ms")
    print(f"  ratio big / small: median {mb / ms:.3f}, fastest {min(tb) / min(ts):.3f}")
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode == 0:
        for name, env in (("big", big), ("small", small)):
            o = subprocess.run(["valgrind", "--tool=callgrind",
                                f"--callgrind-out-file={work}/cg.{name}",
                                binary, "status", "--json"], env=env,
                               capture_output=True, text=True)
            ir = [l for l in o.stderr.splitlines() if "Collected" in l]
            print(f"  callgrind {name}: {ir[0].split(':', 1)[1].strip() if ir else '?'} instructions")


if __name__ == "__main__":
    main()
