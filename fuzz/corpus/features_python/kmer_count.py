#!/usr/bin/env python3
"""Count k-mers of a DNA sequence in a dict.

  kmer_count.py FASTA_OR_N [--k K] [--seed S] [--top T]

FASTA_OR_N is either a FASTA file (k-mers are counted within each record, on
the forward strand, skipping k-mers that contain anything but ACGT) or a number
N, in which case a deterministic random sequence of N bases is generated in
memory. Memory grows with the number of distinct k-mers (at most
min(4^K, N)): with the default K = 15, a random sequence of N bases has almost N
distinct k-mers, so memory is roughly linear in N (~100 bytes per k-mer).
CPU is linear in N. Prints one summary line.
"""

import argparse
import heapq
import random
import sys

VALID = frozenset("ACGT")


def records_from_fasta(path):
    name, chunks = None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if chunks:
                    yield name, "".join(chunks).upper()
                name, chunks = line[1:].split()[0] if len(line) > 1 else "", []
            else:
                chunks.append(line)
    if chunks:
        yield name, "".join(chunks).upper()


def random_sequence(n, seed):
    rng = random.Random(seed)
    # choices() in blocks keeps the temporary list small for large n
    parts = []
    block = 1 << 20
    for start in range(0, n, block):
        parts.append("".join(rng.choices("ACGT", k=min(block, n - start))))
    return "".join(parts)


def count_kmers(seq, k, counts):
    get = counts.get
    clean = set(seq) <= VALID
    for i in range(len(seq) - k + 1):
        kmer = seq[i:i + k]
        if not clean and not set(kmer) <= VALID:
            continue
        counts[kmer] = get(kmer, 0) + 1


def main():
    ap = argparse.ArgumentParser(description="Count k-mers of a FASTA file or of N random bases.")
    ap.add_argument("source", metavar="FASTA_OR_N", help="FASTA path, or a number of random bases to generate")
    ap.add_argument("--k", type=int, default=15, help="k-mer length (default 15)")
    ap.add_argument("--seed", type=int, default=7, help="seed for the generated sequence (default 7)")
    ap.add_argument("--top", type=int, default=3, help="how many of the most frequent k-mers to print")
    args = ap.parse_args()
    if args.k < 1:
        ap.error("--k must be >= 1")

    counts = {}
    bases = 0
    if args.source.isdigit():
        seq = random_sequence(int(args.source), args.seed)
        bases = len(seq)
        count_kmers(seq, args.k, counts)
        label = "random(%d, seed=%d)" % (bases, args.seed)
    else:
        try:
            for _, seq in records_from_fasta(args.source):
                bases += len(seq)
                count_kmers(seq, args.k, counts)
        except OSError as e:
            print("kmer_count.py: cannot read %s: %s" % (args.source, e.strerror), file=sys.stderr)
            return 2
        label = args.source

    total = sum(counts.values())
    top = heapq.nsmallest(max(0, args.top), counts.items(), key=lambda kv: (-kv[1], kv[0]))
    print("kmer_count: %s: %d bases, k=%d, %d k-mers, %d distinct, top %s" % (
        label, bases, args.k, total, len(counts), " ".join("%s:%d" % kv for kv in top) or "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
