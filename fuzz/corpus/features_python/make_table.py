#!/usr/bin/env python3
"""Write a synthetic input file for the other example jobs.

  make_table.py OUT --rows N [--cols C] [--seed S] [--kind counts|metadata|reads]

  counts    gene x cell count matrix: a `gene` column, then C cell columns of
            over-dispersed counts (default)
  metadata  sample metadata: sample id, condition, batch, C numeric measurements
  reads     one DNA read per line (no header), ~30 % of them duplicates, for
            dedup_reads.sh; --cols is the read length

Rows are written as they are generated, so memory stays flat whatever N is; the
output size is linear in N x C. Deterministic for a given seed. Stdlib only.
"""

import argparse
import math
import os
import random
import sys


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1: %r" % text)
    return value


def write_counts(out, rows, cols, rng):
    out.write("gene," + ",".join("cell_%05d" % j for j in range(cols)) + "\n")
    # a few cell groups with their own size factors, so columns differ
    size = [rng.choice((0.5, 1.0, 2.0)) * rng.uniform(0.8, 1.2) for _ in range(cols)]
    for i in range(rows):
        # per-gene mean from a log-normal, counts ~ exponential around it (over-dispersed)
        mean = math.exp(rng.gauss(0.5, 1.5))
        values = []
        for s in size:
            mu = mean * s
            values.append(str(int(rng.expovariate(1.0 / mu))) if mu > 0 else "0")
        out.write("GENE%06d," % i + ",".join(values) + "\n")


def write_metadata(out, rows, cols, rng):
    out.write("sample,condition,batch," + ",".join("m%d" % j for j in range(cols)) + "\n")
    conditions = ("control", "treated")
    for i in range(rows):
        cond = conditions[i % 2]
        shift = 1.5 if cond == "treated" else 0.0
        values = ("%.4f" % rng.gauss(10.0 + shift * (j % 3), 2.0) for j in range(cols))
        out.write("S%06d,%s,b%d," % (i, cond, i % 4) + ",".join(values) + "\n")


def write_reads(out, rows, length, rng):
    # Read number k is always the same sequence (seeded by k), so nothing is
    # kept in memory. About 70 % of the lines are a new read; the rest repeat an
    # earlier one, chosen with a skew towards the first reads (like PCR
    # duplicates of abundant fragments).
    base = rng.getrandbits(32) << 32
    made = 0
    for _ in range(rows):
        if made == 0 or rng.random() < 0.7:
            k = made
            made += 1
        else:
            k = int(made * rng.random() ** 4)
        out.write("".join(random.Random(base + k).choices("ACGT", k=length)) + "\n")


def main():
    ap = argparse.ArgumentParser(description="Write a synthetic CSV / reads file for the example jobs.")
    ap.add_argument("out", help="output path ('-' for stdout)")
    ap.add_argument("--rows", type=positive_int, required=True, help="rows (genes, samples or reads)")
    ap.add_argument("--cols", type=positive_int, default=20, help="columns (cells, measurements) or read length")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--kind", choices=("counts", "metadata", "reads"), default="counts")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    writer = {"counts": write_counts, "metadata": write_metadata, "reads": write_reads}[args.kind]
    try:
        if args.out == "-":
            writer(sys.stdout, args.rows, args.cols, rng)
            size = None
        else:
            with open(args.out, "w", buffering=1 << 20) as out:
                writer(out, args.rows, args.cols, rng)
            size = os.path.getsize(args.out)
    except OSError as e:
        print("make_table.py: cannot write %s: %s" % (args.out, e.strerror), file=sys.stderr)
        return 2
    if size is not None:
        print("make_table: wrote %s (%s, %d rows x %d cols, %.2f MB)" % (
            args.out, args.kind, args.rows, args.cols, size / 1e6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
