#!/usr/bin/env bash
# Predict-latency numbers that survive a noisy shared host.
#
#   scripts/bench-latency.sh [ROUNDS] [FILTER]
#
# Builds the `features` criterion bench, runs it ROUNDS times (default 3)
# with FILTER (default: scan, extract without sha256, the 3 models alone,
# end to end with trained models) and prints, per bench, the fastest
# per-iteration sample over all runs (criterion's sample.json: the number
# least disturbed by other tenants) and the median of the runs' medians.
# With valgrind installed it also prints the exact instruction count and
# simulated branch mispredictions per `scan_source` call (callgrind), which
# do not depend on the host's load.
#
# Results go to stdout; BENCHMARKS.md quotes them with the date and host.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-3}"
filter="${2:-scan_source|no_sha256|bench_vector|_trained}"

bin=$(cargo bench --bench features --no-run 2>&1 |
    grep -o 'target/release/deps/features-[0-9a-f]*' | head -1)
if [[ -z "$bin" ]]; then
    echo "bench-latency: could not find the features bench binary" >&2
    exit 1
fi
samples=$(mktemp -d)
trap 'rm -rf "$samples"' EXIT

for r in $(seq 1 "$rounds"); do
    [[ -t 2 ]] && echo "bench-latency: run $r/$rounds" >&2
    rm -rf target/criterion
    "$bin" --bench --warm-up-time 0.5 --measurement-time 2 "$filter" >/dev/null 2>&1
    for d in target/criterion/*/new; do
        [[ -f "$d/sample.json" ]] || continue
        cp "$d/sample.json" "$samples/$(basename "$(dirname "$d")").$r.json"
    done
done

python3 - "$samples" <<'PY'
import collections, glob, json, os, statistics, sys
runs = collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    name = os.path.basename(f).rsplit(".", 2)[0]
    j = json.load(open(f))
    per = [t / i for t, i in zip(j["times"], j["iters"])]
    runs[name].append((min(per), statistics.median(per)))
print(f"{'bench':<50} {'fastest':>12} {'median of medians':>20}")
for name, v in sorted(runs.items()):
    fastest = min(a for a, _ in v) / 1000
    med = statistics.median(b for _, b in v) / 1000
    print(f"{name:<50} {fastest:>9.2f} µs {med:>17.2f} µs   ({len(v)} runs)")
PY

if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
    out="$samples/callgrind.out"
    valgrind --tool=callgrind --branch-sim=yes --callgrind-out-file="$out" \
        "$bin" --bench --profile-time 2 scan_source >/dev/null 2>&1
    python3 - "$out" <<'PY'
import re, subprocess, sys
out = sys.argv[1]
def annotate(*args):
    return subprocess.run(["callgrind_annotate", *args, out],
                          capture_output=True, text=True).stdout
calls = None
for line in annotate("--tree=caller").splitlines():
    m = re.search(r"presize::features::scan_source \((\d+)x\)", line)
    if m:
        calls = int(m.group(1))
        break
for line in annotate("--inclusive=yes").splitlines():
    if re.search(r"^\s*[\d,]+ .*:presize::features::scan_source( \[.*)?$", line) and calls:
        nums = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) \(", line)]
        ir, _, bcm, _, bim = (n // calls for n in nums[:5])
        print(f"scan_source per call (callgrind, {calls} calls): {ir:,} instructions, "
              f"{bcm:,} conditional + {bim:,} indirect mispredictions (simulated)")
        break
PY
fi
