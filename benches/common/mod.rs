//! Shared bench inputs.
#![allow(dead_code)]

/// A deterministic, realistic 2,000-line Python analysis script.
pub fn python_script(lines: usize) -> String {
    let mut s = String::from(
        "#!/usr/bin/env python3\n\"\"\"Synthetic analysis used by the benchmarks.\"\"\"\n\
         import numpy as np\nimport pandas as pd\nimport scanpy as sc\n\
         from sklearn.decomposition import PCA\nfrom concurrent.futures import ProcessPoolExecutor\n\n",
    );
    let mut i = 0;
    while s.lines().count() < lines {
        s += &format!(
            "# step {i}: normalise and reduce\n\
             def step_{i}(adata, n_top={n}):\n    \
                 sc.pp.filter_cells(adata, min_genes=200)\n    \
                 df = pd.read_csv(\"table_{i}.csv\", sep=\"\\t\")\n    \
                 for col in df.columns:\n        \
                     df[col] = np.log1p(df[col].values) * 1.5e3\n    \
                 pca = PCA(n_components=50)\n    \
                 out = [x ** 2 for x in range(n_top) if x % 3 == 0]\n    \
                 with ProcessPoolExecutor(max_workers=4) as ex:\n        \
                     res = list(ex.map(str, out))\n    \
                 return pca.fit_transform(df.values), res  # done\n\n",
            n = 1000 + i
        );
        i += 1;
    }
    s.lines().take(lines).collect::<Vec<_>>().join("\n") + "\n"
}

/// A deterministic shell pipeline script of `lines` lines: alignment, sorting, calling,
/// with memory and thread flags on most command lines (the input of `hints::from_shell`).
pub fn shell_pipeline(lines: usize) -> String {
    let mut s = String::from("#!/bin/bash\nset -euo pipefail\nTHREADS=8\n");
    let mut i = 0;
    while s.lines().count() < lines {
        s += &format!(
            "# sample {i}\n\
             bwa mem -t 8 -R '@RG\\tID:s{i}\\tSM:s{i}' ref.fa s{i}_R1.fq.gz s{i}_R2.fq.gz \\\n  \
               | samtools sort -m 2G -@ 4 -o s{i}.bam -\n\
             samtools index -@ \"$THREADS\" s{i}.bam\n\
             java -Xmx8g -jar picard.jar MarkDuplicates I=s{i}.bam O=s{i}.md.bam M=s{i}.txt\n\
             gatk --java-options \"-Xmx12g -XX:+UseParallelGC\" HaplotypeCaller -R ref.fa -I s{i}.md.bam -O s{i}.vcf.gz\n\
             if [ -s s{i}.vcf.gz ]; then bcftools stats --threads 2 s{i}.vcf.gz > s{i}.stats; fi\n\n"
        );
        i += 1;
    }
    s.lines().take(lines).collect::<Vec<_>>().join("\n") + "\n"
}
