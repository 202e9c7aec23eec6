#!/usr/bin/env python3
"""Simulate a single-cell expression matrix and find its first principal axis.

  simulate_cells.py --cells N --genes G [--clusters K] [--iters I] [--seed S]

Builds an N x G matrix as N rows of array('d') (8 bytes per value, so memory is
about 8*N*G bytes plus a little per row), simulates K clusters of cells with
their own marker genes, normalises each cell to 10,000 counts and log1p
(in place), centres each gene, and runs I iterations of power iteration for
the leading principal component (each iteration is two passes over the
matrix). CPU time is proportional to N*G*I. Prints one summary line.
"""

import argparse
import math
import random
import sys
from array import array
from operator import mul


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1: %r" % text)
    return value


def simulate(n_cells, n_genes, n_clusters, rng):
    base = [math.exp(rng.gauss(0.0, 1.0)) for _ in range(n_genes)]
    # each cluster up-regulates its own block of marker genes 8x
    block = max(1, n_genes // (2 * n_clusters))
    markers = [set(range(c * block, min(n_genes, (c + 1) * block))) for c in range(n_clusters)]
    labels = []
    rows = []
    expo = rng.expovariate
    for i in range(n_cells):
        c = i % n_clusters
        labels.append(c)
        depth = rng.uniform(0.5, 1.5)
        mk = markers[c]
        row = array("d", (
            float(int(expo(1.0 / (base[g] * depth * (8.0 if g in mk else 1.0)))))
            for g in range(n_genes)))
        rows.append(row)
    return rows, labels


def normalise(rows, n_genes):
    """Library-size normalise to 10,000, log1p, then centre each gene (in place)."""
    log1p = math.log1p
    for row in rows:
        total = sum(row) or 1.0
        f = 1e4 / total
        for g in range(n_genes):
            row[g] = log1p(row[g] * f)
    means = [0.0] * n_genes
    for row in rows:
        means = list(map(float.__add__, means, row))
    n = float(len(rows))
    means = [m / n for m in means]
    for row in rows:
        for g in range(n_genes):
            row[g] -= means[g]


def power_iteration(rows, n_genes, iters, rng):
    """Leading eigenvector of X^T X by power iteration; returns (vector, eigenvalue)."""
    v = [rng.gauss(0.0, 1.0) for _ in range(n_genes)]
    norm = math.sqrt(math.fsum(x * x for x in v))
    v = [x / norm for x in v]
    eig = 0.0
    for _ in range(iters):
        w = [0.0] * n_genes
        for row in rows:
            u = sum(map(mul, row, v))           # score of this cell
            if u:
                w = [a + u * b for a, b in zip(w, row)]
        eig = math.sqrt(math.fsum(x * x for x in w))
        if eig == 0.0:
            break
        v = [x / eig for x in w]
    return v, eig


def main():
    ap = argparse.ArgumentParser(description="Simulate cells x genes expression and run a tiny PCA.")
    ap.add_argument("--cells", type=positive_int, default=400, help="number of cells (default 400)")
    ap.add_argument("--genes", type=positive_int, default=200, help="number of genes (default 200)")
    ap.add_argument("--clusters", type=positive_int, default=3, help="number of simulated cell types (default 3)")
    ap.add_argument("--iters", type=positive_int, default=8, help="power-iteration steps (default 8)")
    ap.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    rows, labels = simulate(args.cells, args.genes, args.clusters, rng)
    normalise(rows, args.genes)
    total_var = math.fsum(math.fsum(x * x for x in row) for row in rows)
    v, eig = power_iteration(rows, args.genes, args.iters, rng)
    explained = eig / total_var if total_var else 0.0
    top_gene = max(range(args.genes), key=lambda g: abs(v[g]))
    print("simulate_cells: %d cells x %d genes (%d clusters), PC1 explains %.1f%% of variance after %d "
          "iterations, top loading gene %d (%.3f)" % (args.cells, args.genes, args.clusters, 100.0 * explained,
                                                       args.iters, top_gene, v[top_gene]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
