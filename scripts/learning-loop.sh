#!/usr/bin/env bash
# The real learning loop: run the example jobs with varied inputs through `presize run`,
# retrain, run new jobs, and compare the trained model's predictions with the prior's.
#
#   scripts/learning-loop.sh [N_TRAIN=150] [N_TEST=30]
#
# Everything lives in a temporary directory (its own database and model directory); the
# summary is printed as Markdown and written to $WORK/summary.json. Needs python3 (stdlib).
set -euo pipefail
cd "$(dirname "$0")/.."
N_TRAIN=${1:-150}
N_TEST=${2:-30}
cargo build --release --quiet
BIN=$PWD/target/release/presize
WORK=$(mktemp -d /tmp/presize-loop.XXXXXX)
export PRESIZE_DB=$WORK/presize.db PRESIZE_MODEL_DIR=$WORK/models PRESIZE_CONFIG=$WORK/config.toml
: > "$PRESIZE_CONFIG"
unset PRESIZE_DRY_RUN PRESIZE_HOST_BUDGET_MB
PY=$(command -v python3)
JOBS=examples/jobs
mkdir -p "$WORK/tables"
echo "workdir: $WORK" >&2

# Inputs: count tables of many sizes (summarise_table's memory grows with the file).
for i in $(seq 1 40); do
  rows=$(( 500 + (i * 7919) % 30000 ))
  "$PY" $JOBS/make_table.py "$WORK/tables/t$i.csv" --rows $rows --cols 20 --seed $i >/dev/null
done

# Job i -> a command line; train and test use disjoint parameter values.
job() { # $1 = index, $2 = train|test
  local i=$1 phase=$2 kind=$(( $1 % 3 ))
  local salt=0; [ "$phase" = test ] && salt=1
  case $kind in
    0) echo "$PY $JOBS/kmer_count.py $(( 20000 + ((i * 104729 + salt * 5077) % 600000) ))" ;;
    1) local t=$(( 1 + (i * 13 + salt * 7) % 40 ))
       echo "--input $WORK/tables/t$t.csv -- $PY $JOBS/summarise_table.py $WORK/tables/t$t.csv" ;;
    2) echo "$PY $JOBS/simulate_cells.py --cells $(( 200 + (i * 2741 + salt * 331) % 4000 )) --genes $(( 50 + (i * 37 + salt * 11) % 200 )) --iters 4" ;;
  esac
}

run_job() { # $1 = command spec
  local spec=$1
  if [[ $spec == --input* ]]; then
    # shellcheck disable=SC2086
    "$BIN" run -q $spec >/dev/null
  else
    # shellcheck disable=SC2086
    "$BIN" run -q -- $spec >/dev/null
  fi
}

echo "running $N_TRAIN training jobs" >&2
for i in $(seq 1 "$N_TRAIN"); do run_job "$(job "$i" train)"; done

echo "retraining" >&2
"$BIN" retrain --min-rows 100 --json > "$WORK/retrain.json"

echo "running $N_TEST new jobs (prior prediction first, then the run with the model)" >&2
EMPTY=$WORK/empty-models; mkdir -p "$EMPTY"
: > "$WORK/prior.jsonl"
for i in $(seq 1 "$N_TEST"); do
  spec=$(job "$i" test)
  script=$(echo "$spec" | grep -o "$JOBS/[a-z_]*\.py")
  inputs=$(echo "$spec" | grep -o -- "--input [^ ]*" || true)
  # shellcheck disable=SC2086
  PRESIZE_MODEL_DIR=$EMPTY "$BIN" predict --json $inputs "$script" | tr -d '\n' >> "$WORK/prior.jsonl"
  echo >> "$WORK/prior.jsonl"
  run_job "$spec"
done

"$PY" - "$WORK" "$N_TRAIN" "$N_TEST" <<'PYEOF'
import json, sqlite3, statistics, sys
work, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(f"{work}/presize.db")
rows = db.execute(
    "SELECT predicted_cpu_s, predicted_rss_mb, predicted_wall_s, actual_cpu_s, actual_rss_mb,"
    " actual_wall_s, upper_rss_mb, memory_limit_mb, model_version, outcome"
    " FROM resource_prediction ORDER BY id DESC LIMIT ?", (n_test,)).fetchall()[::-1]
prior = [json.loads(l) for l in open(f"{work}/prior.jsonl") if l.strip()]
retrain = json.load(open(f"{work}/retrain.json"))
def ape(p, a): return abs(p - a) / a
out = {"train_jobs": n_train, "test_jobs": n_test, "retrain_status": retrain["status"],
       "model_version": rows[0][8], "targets": {}}
for t, (pi, ai, key) in {"cpu_seconds": (0, 3, "cpu_seconds"), "peak_rss_mb": (1, 4, "peak_rss_mb"),
                          "wall_seconds": (2, 5, "wall_seconds")}.items():
    m = [ape(r[pi], r[ai]) for r in rows if r[ai]]
    p = [ape(pr[key], r[ai]) for pr, r in zip(prior, rows) if r[ai]]
    out["targets"][t] = {"model_median_ape": statistics.median(m), "prior_median_ape": statistics.median(p)}
ok = [r for r in rows if r[9] == "ok" and r[4] is not None]
out["upper_coverage_rss"] = sum(1 for r in ok if r[4] <= r[6]) / len(ok)
out["cap_coverage"] = sum(1 for r in ok if r[4] <= r[7]) / len(ok)
out["outcomes"] = {o: sum(1 for r in rows if r[9] == o) for o in {r[9] for r in rows}}
json.dump(out, open(f"{work}/summary.json", "w"), indent=1)
print(f"| target | prior median APE | trained model median APE |\n|---|---|---|")
for t, v in out["targets"].items():
    print(f"| {t} | {v['prior_median_ape']*100:.1f} % | {v['model_median_ape']*100:.1f} % |")
print(f"\nmodel {out['model_version']} ({out['retrain_status']}); {n_test} new jobs: "
      f"peak RSS within the upper bound {out['upper_coverage_rss']*100:.0f} %, within the "
      f"applied cap {out['cap_coverage']*100:.0f} %; outcomes {out['outcomes']}")
PYEOF
