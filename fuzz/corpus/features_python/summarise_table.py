#!/usr/bin/env python3
"""Per-column summary statistics of a CSV, the memory-hungry way.

  summarise_table.py CSV [--json OUT]

Loads every numeric column of the whole file into Python lists of floats (so
peak memory grows linearly with the input: each value costs ~32 bytes, about
4 MB per MB of CSV for decimals like 12.3456 and ~16 MB per MB for small
integer counts), then
computes mean, standard deviation, min, quartiles and max per column (sorting a
copy of each column). Non-numeric columns (ids, labels) are counted, not kept.
Prints one summary line; --json also writes the per-column table.
"""

import argparse
import csv
import json
import math
import sys


def quantile(sorted_values, q):
    """Linear-interpolation quantile (numpy's default) of a sorted list."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def load(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return [], [], 0
        columns = [[] for _ in header]
        numeric = [True] * len(header)
        rows = 0
        for row in reader:
            if not row:
                continue
            rows += 1
            for j, cell in enumerate(row[: len(header)]):
                if not numeric[j]:
                    continue
                try:
                    columns[j].append(float(cell))
                except ValueError:
                    numeric[j] = False
                    columns[j] = []  # a label column: drop what was kept
    keep = [j for j in range(len(header)) if numeric[j] and columns[j]]
    return [header[j] for j in keep], [columns[j] for j in keep], rows


def summarise(values):
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    s = sorted(values)
    return {"n": n, "mean": mean, "sd": math.sqrt(var), "min": s[0], "q25": quantile(s, 0.25),
            "median": quantile(s, 0.5), "q75": quantile(s, 0.75), "max": s[-1]}


def main():
    ap = argparse.ArgumentParser(description="Per-column summary of a CSV (loads it all into memory).")
    ap.add_argument("csv", help="input CSV with a header row")
    ap.add_argument("--json", metavar="OUT", help="write the per-column statistics as JSON")
    args = ap.parse_args()

    try:
        names, columns, rows = load(args.csv)
    except OSError as e:
        print("summarise_table.py: cannot read %s: %s" % (args.csv, e.strerror), file=sys.stderr)
        return 2
    if not columns:
        print("summarise_table.py: %s has no numeric columns" % args.csv, file=sys.stderr)
        return 2

    stats = {name: summarise(col) for name, col in zip(names, columns)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=1)

    means = [s["mean"] for s in stats.values()]
    sds = [s["sd"] for s in stats.values()]
    widest = max(stats, key=lambda k: stats[k]["sd"])
    print("summarise_table: %s: %d rows, %d numeric columns, mean of means %.4g, median sd %.4g, "
          "most variable %s (sd %.4g)" % (args.csv, rows, len(columns), math.fsum(means) / len(means),
                                          quantile(sorted(sds), 0.5), widest, stats[widest]["sd"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
