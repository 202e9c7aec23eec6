#!/bin/bash
# Fixture: a shell pipeline (not run by the tests)
set -euo pipefail
samtools sort -@ 4 in.bam | samtools view -h - > sorted.sam
bwa mem ref.fa reads.fq > out.sam && python3 summarise.py out.sam
