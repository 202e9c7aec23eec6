#!/bin/bash
set -euo pipefail
f() { echo "$1"; }
function g { cat "$@" | sort -k1,1 > out.txt; }
for i in 1 2 3; do zcat "r$i.fq.gz" | head -n 4000000 & done; wait
while read -r line; do echo "${line%%x}" $(( 1 + 2 )) `date`; done < input.txt
until false; do break; done
cat <<'EOF2' > x
heredoc $(not run)
EOF2
cat <<-END
	tabbed
	END
xargs -P 8 -n1 gzip < list.txt; parallel --jobs 4 bwa mem ::: *.fq
samtools sort --threads 8 -o o.bam i.bam && CUDA_VISIBLE_DEVICES=0 python3 t.py 1e6 \
  --cells 20000 || nvidia-smi
echo 'single $(x)' "double $(echo "nested")" $'ansi\n'
# comment
