#!/usr/bin/env bash
# Build a large presize store from real runs, for the scale benchmarks (BENCHMARKS.md,
# "presize at a million rows").
#
#   scripts/build-scale-store.sh DB [ROWS] [HOT_EVERY]
#
# 1. Real runs: with PRESIZE_BIN (default target/release/presize) and PRESIZE_DB=DB, runs
#    120 real jobs through `presize run` (a Python script that reads its input file and
#    holds N MB for a moment, N and the input varying per run, job key `scale-hot`; and a
#    shell pipeline that sorts its input, job key `scale-sort`). Every row is a real
#    prediction, a real cgroup-capped run and a real settlement, with real features (JSON
#    text before migration V11, the compact blob since).
# 2. Replication, in SQL: the settled rows of step 1 are the templates. Row k of ROWS
#    (default 1,000,000) copies template k mod T (every column, features unchanged),
#    except: every HOT_EVERY-th row (default 25, i.e. 40,000 of 1M) keeps the hot key
#    `scale-hot` and copies a `scale-hot` template; the others get key
#    `<template key>#<k mod 24989>` (about 40 rows per key); actual peak / CPU / wall are
#    scaled by a deterministic factor in [0.8, 1.2) from k; job_id is fresh; predicted_at /
#    started_at / settled_at are 30 s apart per row, ending now. Then the V5 `key_history`
#    window is refilled from the table (as the settle transaction fills it, from the V10 size
#    columns). Needs a store at V10 or later (PRESIZE_BIN built from 2026-12-03 on).
set -euo pipefail
cd "$(dirname "$0")/.."

db="${1:?usage: build-scale-store.sh DB [ROWS] [HOT_EVERY]}"
rows="${2:-1000000}"
hot_every="${3:-25}"
bin="${PRESIZE_BIN:-target/release/presize}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export PRESIZE_DB="$db"
export PRESIZE_MODEL_DIR="${PRESIZE_MODEL_DIR:-$(dirname "$db")/models}"
mkdir -p "$(dirname "$db")"

cat >"$work/alloc.py" <<'PY'
import os
import sys
import time

n_mb = int(sys.argv[1])
total = 0
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        total += len(f.read())
block = bytearray(n_mb * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.05)
print(total, len(block), os.getpid())
PY
cat >"$work/sort.sh" <<'SH'
#!/bin/sh
sort "$1" | uniq -c | sort -rn | head -n 5
SH
chmod +x "$work/sort.sh"
for i in 1 2 3 4 5 6; do
    head -c $((i * 700000)) /dev/urandom | od -An -tx1 >"$work/in$i.txt"
done

echo "build-scale-store: real runs" >&2
for r in $(seq 0 79); do
    i=$((r % 6 + 1))
    mb=$((8 + (r * 7) % 90))
    "$bin" run -q --job-key scale-hot --script "$work/alloc.py" --input "$work/in$i.txt" \
        -- python3 "$work/alloc.py" "$mb" "$work/in$i.txt" >/dev/null
done
for r in $(seq 0 39); do
    i=$((r % 6 + 1))
    "$bin" run -q --job-key scale-sort --script "$work/sort.sh" --input "$work/in$i.txt" \
        -- "$work/sort.sh" "$work/in$i.txt" >/dev/null
done

echo "build-scale-store: replicating to $rows rows" >&2
cols="analysis_id, runtime, script_path, script_sha256, command, features, schema_hash,
    predicted_cpu_s, predicted_rss_mb, predicted_wall_s, upper_cpu_s, upper_rss_mb, upper_wall_s,
    lower_rss_mb, confidence, source, memory_limit_mb, timeout_s, applied_memory_mb,
    applied_timeout_s, enforced, memory_enforced, dry_run, backend, priority, attempt,
    rusage_maxrss_mb, measure_source, exit_code, signal, outcome, model_version, host,
    executor_pid, executor_start, job_pid, job_start, cgroup_name, memory_source,
    timeout_source, evidence, limit_reason, executor_boot_id, executor_pidns, executor_token,
    oom_events, size_input_mb, size_arg_log10"
tcols=$(echo "$cols" | sed 's/\([a-z_][a-z_0-9]*\)/t.\1/g')
sqlite3 "$db" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -200000;
CREATE TEMP TABLE tpl AS
    SELECT row_number() OVER (ORDER BY id) - 1 AS n, * FROM resource_prediction
    WHERE settled_at IS NOT NULL AND outcome IN ('ok', 'oom_killed', 'timed_out');
CREATE TEMP TABLE hot AS
    SELECT row_number() OVER (ORDER BY n) - 1 AS h, * FROM tpl WHERE job_key = 'scale-hot';
BEGIN;
WITH RECURSIVE seq(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM seq WHERE k < $rows - 1),
pick AS (
    SELECT k,
           CASE WHEN k % $hot_every = 0
                THEN (SELECT n FROM hot WHERE h = (k / $hot_every) % (SELECT count(*) FROM hot))
                ELSE k % (SELECT count(*) FROM tpl) END AS n,
           0.8 + 0.4 * (((k * 2654435761) % 1000003) / 1000003.0) AS f
    FROM seq
)
INSERT INTO resource_prediction (job_id, job_key, $cols, actual_cpu_s, actual_rss_mb,
    actual_wall_s, charged_peak_mb, predicted_at, started_at, settled_at)
SELECT printf('scale-%d', p.k),
       CASE WHEN p.k % $hot_every = 0 THEN 'scale-hot'
            ELSE t.job_key || '#' || (p.k % 24989) END,
       $tcols,
       t.actual_cpu_s * p.f, t.actual_rss_mb * p.f, t.actual_wall_s * p.f,
       t.charged_peak_mb * p.f,
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', ($rows - p.k) * 30 + 2)),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', ($rows - p.k) * 30 + 1)),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%d seconds', ($rows - p.k) * 30))
FROM pick p JOIN tpl t ON t.n = p.n;
DELETE FROM key_history;
INSERT INTO key_history (row_id, job_key, outcome, peak_mb, wall_s, cpu_s, input_mb, arg_log10,
                         cap_mb, timeout_s)
    SELECT id, job_key, outcome, actual_rss_mb, actual_wall_s, actual_cpu_s,
           size_input_mb, size_arg_log10,
           CASE WHEN memory_enforced = 1 THEN applied_memory_mb END,
           applied_timeout_s
    FROM resource_prediction
    WHERE outcome IN ('ok', 'oom_killed', 'timed_out');
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
SQL
sqlite3 "$db" "SELECT count(*), sum(job_key = 'scale-hot') FROM resource_prediction" >&2
