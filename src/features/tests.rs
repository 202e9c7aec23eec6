//! Unit tests of the features module (real files in temp dirs).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn cat() -> Catalog {
    Catalog::builtin()
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn scan_file(path: &Path) -> ScriptScan {
    scan_script(path, None, &cat(), &ScanOptions::default()).unwrap()
}

fn heavy(scan: &ScriptScan, name: &str) -> (bool, u32) {
    scan.heavy
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, i, u)| (*i, *u))
        .unwrap_or_else(|| panic!("{name} not in catalog"))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

fn assert_finite(v: &FeatureVector) {
    assert_eq!(v.values.len(), v.schema.names.len());
    for (n, x) in v.schema.names.iter().zip(&v.values) {
        assert!(x.is_finite(), "{n} = {x}");
    }
}

/// Extracts with the script and returns the vector (checked finite).
fn vector_of(path: &Path) -> FeatureVector {
    let prior = PriorRuns::default();
    let req = FeatureRequest {
        script: Some(path),
        runtime: None,
        inputs: &[],
        command: &[],
        prior: &prior,
    };
    let ex = extract(&req, &cat(), &ScanOptions::default()).unwrap();
    assert_finite(&ex.vector);
    ex.vector
}

fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

const NOTEBOOK: &str = r#"{
 "cells": [
  {"cell_type": "markdown", "metadata": {}, "source": ["import numpy\n", "sc.pl.umap(x)\n"]},
  {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [],
   "source": ["import scanpy as sc\n", "%matplotlib inline\n", "!ls -la | head\n", "adata = sc.read_h5ad(\"x.h5ad\")\n"]},
  {"cell_type": "code", "execution_count": 2, "metadata": {},
   "outputs": [{"output_type": "stream", "name": "stdout", "text": ["sc.pp.fake(1)\n"]}],
   "source": "sc.pp.filter_cells(adata, min_genes=200)\n# sc.not_counted()\nsc.tl.pca(adata)"},
  {"cell_type": "code", "execution_count": 3, "metadata": {}, "outputs": [],
   "source": ["%%bash\n", "sc.fake(1)\n"]},
  {"cell_type": "raw", "metadata": {}, "source": "sc.raw(1)"}
 ],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
 "nbformat": 4,
 "nbformat_minor": 5
}"#;

#[test]
fn notebook_scanpy_usage() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "analysis.ipynb", NOTEBOOK.as_bytes());
    let s = scan_file(&p);
    assert_eq!(s.language, Language::Python);
    assert_eq!(s.imports, set(&["scanpy"]));
    assert_eq!(heavy(&s, "scanpy"), (true, 3));
    assert_eq!(heavy(&s, "numpy"), (false, 0));
    assert_eq!(s.counts.read_calls, 1);
    assert_eq!(s.counts.comment_lines, 1);
    let v = vector_of(&p);
    assert_eq!(v.get("lib_scanpy_imported"), Some(1.0));
    assert_eq!(v.get("lib_scanpy_usage"), Some(3.0));
    assert_eq!(v.get("heavy_imports"), Some(1.0));
    assert_eq!(v.get("heavy_weight"), Some(1.0));
    assert_eq!(v.get("lang_python"), Some(1.0));
    assert_eq!(v.get("imports"), Some(1.0));
}

#[test]
fn notebook_variants() {
    let dir = tempfile::tempdir().unwrap();
    // No code cells: fine, zero counts.
    let p = write(
        dir.path(),
        "prose.ipynb",
        br#"{"cells": [{"cell_type": "markdown", "source": "import torch"}], "metadata": {}}"#,
    );
    let s = scan_file(&p);
    assert!(s.imports.is_empty());
    assert_eq!(s.counts, TokenCounts::default());
    // Empty file: fine.
    let p = write(dir.path(), "empty.ipynb", b"");
    assert_eq!(scan_file(&p).counts, TokenCounts::default());
    // nbformat 3 with an R kernel.
    let p = write(
        dir.path(),
        "old.ipynb",
        br#"{"metadata": {"language_info": {"name": "R"}}, "nbformat": 3,
            "worksheets": [{"cells": [{"cell_type": "code", "input": ["library(Seurat)\n", "x <- 1"]}]}]}"#,
    );
    let s = scan_file(&p);
    assert_eq!(s.language, Language::R);
    assert_eq!(s.imports, set(&["Seurat"]));
    // Malformed JSON, and JSON that is not a notebook object.
    for (name, body) in [
        (
            "bad.ipynb",
            &br#"{"cells": [ {"cell_type": "code", "source": "x" "#[..],
        ),
        ("trailing.ipynb", &br#"{"cells": []} {"#[..]),
        ("array.ipynb", &b"[1, 2, 3]"[..]),
        (
            "badsource.ipynb",
            &br#"{"cells": [{"cell_type": "code", "source": 5}]}"#[..],
        ),
    ] {
        let p = write(dir.path(), name, body);
        match scan_script(&p, None, &cat(), &ScanOptions::default()) {
            Err(e @ FeatureError::Notebook { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && !msg.contains('\n'), "{msg}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // A truncated notebook keeps the cells read before the cut.
    let mut big = String::from(
        r#"{"cells": [{"cell_type": "code", "source": "import torch\ntorch.ones(1)\n"}, {"cell_type": "code", "outputs": [{"data": ""#,
    );
    big.push_str(&"A".repeat(5000));
    big.push_str(r#""}], "source": ""}]}"#);
    let p = write(dir.path(), "big.ipynb", big.as_bytes());
    let s = scan_script(
        &p,
        None,
        &cat(),
        &ScanOptions {
            max_script_bytes: 2000,
            ..ScanOptions::default()
        },
    )
    .unwrap();
    assert!(s.truncated);
    assert_eq!(heavy(&s, "torch"), (true, 1));
}

#[test]
fn python_imports_strings_and_comments() {
    let src = br#"#!/usr/bin/env python3
"""Module docstring: import scipy"""
import numpy as np
from pandas import read_csv
import a.b.c as d
import importlib, os.path
torch = importlib.import_module("torch")
# import scipy
s = "import scipy"
t = '''
import scipy
'''
u = f"{x} import scipy"
from . import sibling
from .pkg import thing
from __future__ import annotations
x = np.zeros(3)
df = read_csv("x.csv")
y = torch.ones(2)
d.run()
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "imports.py", src);
    let s = scan_file(&p);
    assert_eq!(
        s.imports,
        set(&["a", "importlib", "numpy", "os", "pandas", "torch"])
    );
    assert_eq!(heavy(&s, "scipy"), (false, 0));
    assert_eq!(heavy(&s, "numpy"), (true, 1));
    assert_eq!(heavy(&s, "pandas"), (true, 1));
    assert_eq!(heavy(&s, "torch"), (true, 1));
    assert_eq!(s.counts.read_calls, 1);
    assert_eq!(s.language, Language::Python);
    let v = vector_of(&p);
    assert_eq!(v.get("lib_scipy_imported"), Some(0.0));
    assert_eq!(v.get("lib_numpy_imported"), Some(1.0));
}

#[test]
fn python_alias_aware_usage() {
    let src = b"import scanpy
from scanpy import pp
import sklearn.decomposition as skd
from sklearn import (
    cluster as cl,
    metrics,
)
import pymc3 as pm
scanpy.read('x.h5ad')
pp.neighbors(a)
skd.PCA()
cl.KMeans(); metrics.f1_score()
obj.scanpy.x
with pm.Model() as model:
    pass
";
    let (imports, counts, heavy) = scan_source(src, Language::Python, &cat());
    assert_eq!(imports, set(&["pymc3", "scanpy", "sklearn"]));
    let get = |n: &str| heavy.iter().find(|h| h.0 == n).map(|h| (h.1, h.2)).unwrap();
    assert_eq!(get("scanpy"), (true, 2));
    assert_eq!(get("scikit-learn"), (true, 3));
    assert_eq!(get("pymc"), (true, 1));
    assert_eq!(counts.read_calls, 1, "scanpy.read counts as a file read");
}

#[test]
fn python_hints() {
    let src = br#"from joblib import Parallel
import torch
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model.fit(X, n_jobs=4)
with ThreadPoolExecutor(max_workers=2) as ex:
    pass
m.to(device=dev)
ok = device == 1
"#;
    let (_, c, _) = scan_source(src, Language::Python, &cat());
    assert_eq!(c.gpu_hints, 3, "string cuda, torch.cuda, device=");
    assert_eq!(c.parallel_hints, 3, "Parallel, n_jobs, ThreadPoolExecutor");
}

#[test]
fn python_exact_counts() {
    let src = b"# header comment
import os  # trailing comment

def work(path, n=1_000):
    # inner comment
    total = 0
    for line in open(path):
        total += len(line)
    while total > 1e6:
        total //= 2
    return [x for x in range(n)]

f = lambda v: v * 2
print(work(\"a.txt\"), f(3))
";
    let (imports, c, _) = scan_source(src, Language::Python, &cat());
    assert_eq!(imports, set(&["os"]));
    assert_eq!(c.lines, 14);
    assert_eq!(c.code_lines, 10);
    assert_eq!(c.comment_lines, 2);
    assert_eq!(c.loops, 3);
    assert_eq!(c.func_defs, 2);
    assert_eq!(c.calls, 6);
    assert_eq!(c.read_calls, 1);
    assert_eq!(c.max_numeric_log10, 6.0);
    assert_eq!(c.parallel_hints, 0);
    assert_eq!(c.gpu_hints, 0);
    // x = f(1, "a")  -> x = f ( 1 , "a" )
    let (_, c, _) = scan_source(b"x = f(1, \"a\")  # c", Language::Python, &cat());
    assert_eq!(c.tokens, 8);
    assert_eq!(c.code_lines, 1);
    assert_eq!(c.lines, 1);
}

#[test]
fn python_strings_edge_cases() {
    // Unterminated triple-quoted string runs to the end; escaped quotes.
    let src = b"a = 'it\\'s' ; import json\nb = r\"\\\"\" \nc = \"\"\"\nimport scipy\n";
    let (imports, c, _) = scan_source(src, Language::Python, &cat());
    assert_eq!(imports, set(&["json"]));
    assert_eq!(c.lines, 4);
    // Continuation lines and implicit joins.
    let src = b"from numpy import (array,\n    zeros)\nx = array([1,\n 2]) + \\\n zeros(2)\n";
    let (imports, _, heavy) = scan_source(src, Language::Python, &cat());
    assert_eq!(imports, set(&["numpy"]));
    assert_eq!(heavy.iter().find(|h| h.0 == "numpy").unwrap().2, 2);
    // An import on the last line without a newline.
    let (imports, _, heavy) = scan_source(b"x = 1\nimport numpy as np", Language::Python, &cat());
    assert_eq!(imports, set(&["numpy"]));
    assert!(heavy.iter().any(|h| h.0 == "numpy" && h.1));
    let (imports, _, _) = scan_source(b"from pandas import read_csv", Language::Python, &cat());
    assert_eq!(imports, set(&["pandas"]));
    // `yield from` and `raise ... from` are not imports.
    let src = b"def g():\n    yield from h()\n    raise X from e\n";
    let (imports, c, _) = scan_source(src, Language::Python, &cat());
    assert!(imports.is_empty());
    assert_eq!(c.calls, 1);
}

#[test]
fn r_imports_and_usage() {
    let src = br#"library(Seurat)
suppressMessages(require("DESeq2"))
requireNamespace('edgeR', quietly = TRUE)
dt <- data.table::fread("counts.tsv")
# library(scran)
s <- "library(limma)"
obj <- CreateSeuratObject(counts = dt)
obj <- Seurat::NormalizeData(obj)
dds <- DESeqDataSetFromMatrix(dt, coldata, ~ cond)
dds <- DESeq(dds)
y <- edgeR::DGEList(dt)
n <- 10L
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "de.R", src);
    let s = scan_file(&p);
    assert_eq!(s.language, Language::R);
    assert_eq!(s.imports, set(&["DESeq2", "Seurat", "data.table", "edgeR"]));
    assert_eq!(heavy(&s, "Seurat"), (true, 2));
    assert_eq!(heavy(&s, "DESeq2"), (true, 2));
    assert_eq!(heavy(&s, "edgeR"), (true, 1));
    assert_eq!(heavy(&s, "data.table"), (true, 1));
    assert_eq!(s.counts.calls, 10);
    assert_eq!(s.counts.read_calls, 1);
    assert_eq!(s.counts.comment_lines, 1);
    assert_eq!(s.counts.max_numeric_log10, 1.0);
    let v = vector_of(&p);
    assert_eq!(v.get("lib_data_table_imported"), Some(1.0));
    assert_eq!(v.get("lib_data_table_usage"), Some(1.0));
    assert_eq!(v.get("lib_seurat_usage"), Some(2.0));
    assert_eq!(v.get("lang_r"), Some(1.0));
}

#[test]
fn r_syntax_details() {
    let src = br#"pacman::p_load(dplyr, "ggplot2")
library(package = "SingleCellExperiment")
f <- function(x) x + 1
g <- \(x) x * 2
for (i in 1:3) { repeat { break } }
while (FALSE) {}
x <- r"(library(torch) "quoted")"
`my var` <- 1e6
res <- mclapply(xs, f, mc.cores = 4)
foreach(i = 1:3) %dopar% i
future::plan(multisession)
dev <- torch_device("cuda")
"#;
    let (imports, c, heavy) = scan_source(src, Language::R, &cat());
    assert_eq!(
        imports,
        set(&[
            "SingleCellExperiment",
            "dplyr",
            "future",
            "ggplot2",
            "pacman"
        ])
    );
    let bioc = heavy.iter().find(|h| h.0 == "Bioconductor").unwrap();
    assert!(bioc.1);
    assert_eq!(c.func_defs, 2);
    assert_eq!(c.loops, 3);
    assert_eq!(c.max_numeric_log10, 6.0);
    // mclapply, mc.cores, %dopar%, future::plan, multisession
    assert_eq!(c.parallel_hints, 5);
    assert_eq!(c.gpu_hints, 1);
}

#[test]
fn rmd_chunks() {
    let doc = "---
title: \"x\"
---
Some prose mentioning library(ggplot2) here.

```{r setup, include=FALSE}
library(Seurat)
x <- 1e6
```

More prose: library(ggplot2) again, and `r 1+1` inline.

```{python}
import torch
```

```{r}
library(DESeq2)
```
";
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "report.Rmd", doc.as_bytes());
    let s = scan_file(&p);
    assert_eq!(s.language, Language::R);
    assert_eq!(s.imports, set(&["DESeq2", "Seurat"]));
    assert_eq!(s.counts.code_lines, 3);
    assert_eq!(s.counts.max_numeric_log10, 6.0);

    let p = write(
        dir.path(),
        "open.rmd",
        b"# Title\n\n```{r}\nlibrary(edgeR)\nz <- 3\n",
    );
    let s = scan_file(&p);
    assert_eq!(s.imports, set(&["edgeR"]));
    assert_eq!(s.counts.code_lines, 2);
}

#[test]
fn shell_programs() {
    let src = br#"#!/bin/bash
set -euo pipefail
# samtools in a comment: bowtie2
THREADS=8
samtools sort x | bwa mem ref.fa -; python3 x.py
for f in *.bam; do
  samtools index "$f" &
done
wait
echo "$(date) done" > log.txt
export PATH=$PATH:/opt/bin
cat <<EOF > cfg
star --genomeDir
EOF
if [ -f x ]; then gzip -dc x | head -n 1000000; fi
f() { sort -k1,1 "$1"; }
VAR=1 /usr/bin/env python3 -u y.py 2>&1
xargs -P 4 -n 1 pigz < list.txt
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "pipeline.sh", src);
    let s = scan_file(&p);
    assert_eq!(s.language, Language::Shell);
    assert_eq!(
        s.imports,
        set(&[
            "bwa", "cat", "date", "gzip", "head", "pigz", "python3", "samtools", "sort", "xargs"
        ])
    );
    assert_eq!(s.counts.loops, 1);
    assert_eq!(s.counts.func_defs, 1);
    assert_eq!(s.counts.parallel_hints, 3);
    assert_eq!(s.counts.read_calls, 3);
    assert_eq!(s.counts.max_numeric_log10, 6.0);
    assert_eq!(s.counts.comment_lines, 2);
    let v = vector_of(&p);
    assert_eq!(v.get("lang_shell"), Some(1.0));
    assert_eq!(v.get("imports"), Some(10.0));
}

#[test]
fn shell_minimal_pipeline() {
    let (imports, c, _) = scan_source(
        b"samtools sort x | bwa mem ref.fa reads.fq; python3 x.py",
        Language::Shell,
        &cat(),
    );
    assert_eq!(imports, set(&["bwa", "python3", "samtools"]));
    assert_eq!(c.calls, 3);
}

#[test]
fn shell_substitutions_and_case() {
    let src = br#"out=$(samtools view -c "$bam")
n=`wc -l < file`
case "$1" in
  start) bowtie2 -p 8 x ;;
  stop|halt) pkill y ;;
  *) echo no ;;
esac
diff <(sort a) <(sort b)
[[ -f x && -f y ]] && tabix x
function build {
  make -j4
}
(cd sub && cmake ..)
((i++))
for ((i=0; i<3; i++)); do STAR --runThreadN 4; done
"#;
    let (imports, c, _) = scan_source(src, Language::Shell, &cat());
    assert_eq!(
        imports,
        set(&[
            "STAR", "bowtie2", "cmake", "diff", "make", "pkill", "samtools", "sort", "tabix", "wc"
        ])
    );
    assert_eq!(c.func_defs, 1);
    assert_eq!(c.loops, 1);
}

#[test]
fn truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = Vec::new();
    while body.len() < 10_000 {
        body.extend_from_slice(b"import numpy as np\nx = np.zeros(10)\n");
    }
    let p = write(dir.path(), "big.py", &body);
    let opts = ScanOptions {
        max_script_bytes: 1000,
        ..ScanOptions::default()
    };
    let s = scan_script(&p, None, &cat(), &opts).unwrap();
    assert!(s.truncated);
    assert_eq!(s.bytes_read, 1000);
    assert_eq!(s.file_bytes, body.len() as u64);
    assert_eq!(s.sha256, hex::encode(Sha256::digest(&body[..1000])));
    let prior = PriorRuns::default();
    let req = FeatureRequest {
        script: Some(&p),
        runtime: None,
        inputs: &[],
        command: &[],
        prior: &prior,
    };
    let ex = extract(&req, &cat(), &opts).unwrap();
    assert_eq!(ex.vector.get("script_truncated"), Some(1.0));
    assert_finite(&ex.vector);
    // Exactly at the limit: not truncated.
    let s = scan_script(
        &p,
        None,
        &cat(),
        &ScanOptions {
            max_script_bytes: body.len() as u64,
            ..ScanOptions::default()
        },
    )
    .unwrap();
    assert!(!s.truncated);
    assert_eq!(s.sha256, hex::encode(Sha256::digest(&body)));
}

#[test]
fn script_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write(d, "bin.py", b"import os\n\0\x01\x02");
    assert!(matches!(
        scan_script(&p, None, &cat(), &ScanOptions::default()),
        Err(FeatureError::Binary { .. })
    ));
    let e = scan_script(d, None, &cat(), &ScanOptions::default()).unwrap_err();
    assert!(matches!(e, FeatureError::IsDirectory { .. }), "{e:?}");
    let under_file = d.join("bin.py").join("x.py");
    let e = scan_script(&under_file, None, &cat(), &ScanOptions::default()).unwrap_err();
    assert!(matches!(e, FeatureError::ScriptNotFound { .. }), "{e:?}");
    let missing = d.join("nope.py");
    let e = scan_script(&missing, None, &cat(), &ScanOptions::default()).unwrap_err();
    assert!(matches!(e, FeatureError::ScriptNotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("nope.py") && msg.contains("--script") && !msg.contains('\n'));
    // Non-UTF-8 text is fine.
    let p = write(d, "latin1.py", b"# caf\xe9\nimport numpy\nx = '\xff\xfe'\n");
    let s = scan_file(&p);
    assert_eq!(s.imports, set(&["numpy"]));
    // Empty script.
    let p = write(d, "empty.sh", b"");
    let s = scan_file(&p);
    assert_eq!(s.counts, TokenCounts::default());
    assert_eq!(s.bytes_read, 0);
    // NUL after the first 8 KiB is not binary.
    let mut late = vec![b'#'; 9000];
    late.push(b'\n');
    late.push(0);
    let p = write(d, "late.py", &late);
    assert!(scan_script(&p, None, &cat(), &ScanOptions::default()).is_ok());
    // A FIFO as the script: error, never opened (no hang).
    let fifo = d.join("pipe.py");
    if mkfifo(&fifo) {
        let e = scan_script(&fifo, None, &cat(), &ScanOptions::default()).unwrap_err();
        assert!(matches!(e, FeatureError::ScriptNotRegular { .. }), "{e:?}");
    }
    // Control characters in a path stay escaped in the one-line message.
    let e = FeatureError::ScriptNotFound {
        path: PathBuf::from("a\nb.py"),
    };
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn input_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = write(d, "a.csv", &[b'x'; 100]);
    let b = write(d, "b.csv", &[b'y'; 300]);
    let script = write(d, "run.py", b"print(1)\n");
    let sub = d.join("data");
    std::fs::create_dir_all(sub.join("deep/er")).unwrap();
    write(&sub, "c.bin", &[0u8; 1000]);
    write(&sub.join("deep/er"), "d.bin", &[0u8; 50]);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&b, sub.join("link.csv")).unwrap();

    let cmd: Vec<OsString> = vec![
        "python3".into(),
        script.clone().into(),
        b.clone().into(),
        format!("--in={}", a.display()).into(),
        "not-a-file".into(),
        d.into(),
    ];
    let st = input_stats(&[a.clone(), sub.clone()], &cmd, Some(&script)).unwrap();
    // a (input, and again via --in=), c, d (walk; link not followed), b (command).
    assert_eq!(st.count, 4);
    assert_eq!(st.total_bytes, 100 + 1000 + 50 + 300);
    assert_eq!(st.max_bytes, 1000);

    // The script itself is never an input.
    let st = input_stats(std::slice::from_ref(&script), &[], Some(&script)).unwrap();
    assert_eq!(st, InputStats::default());

    let missing = d.join("missing.csv");
    let e = input_stats(&[missing], &[], None).unwrap_err();
    assert!(matches!(e, FeatureError::InputNotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("--input"));

    let fifo = d.join("fifo");
    assert!(mkfifo(&fifo), "mkfifo failed");
    let e = input_stats(std::slice::from_ref(&fifo), &[], None).unwrap_err();
    assert!(
        matches!(e, FeatureError::InputNotRegular { kind: "FIFO", .. }),
        "{e:?}"
    );
    // On the command line a FIFO is ignored (and never opened).
    let cmd: Vec<OsString> = vec!["cat".into(), fifo.into(), a.clone().into()];
    let st = input_stats(&[], &cmd, None).unwrap();
    assert_eq!(st.count, 1);
    assert_eq!(st.total_bytes, 100);
}

#[test]
fn input_walk_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = dir.path().to_path_buf();
    for i in 0..12 {
        p = p.join(format!("l{i}"));
        std::fs::create_dir(&p).unwrap();
        write(&p, "f", b"12345");
    }
    let st = input_stats(&[dir.path().to_path_buf()], &[], None).unwrap();
    // Files at levels 2..=8 (l0/f is level 2).
    assert_eq!(st.count, 7);
}

/// The builtin schema's hash as released (stored models and stored rows carry it): the
/// names and their order must never change without a schema version bump. Value taken from
/// `presize predict --json` (`schema_hash`) built from main before the feature table.
#[test]
fn builtin_schema_hash_is_pinned() {
    let s = Schema::for_catalog(&cat());
    assert_eq!(s.hash, "27f1a501638ec681");
    assert_eq!(s.names.len(), BASE_FEATURES.len() + 2 * cat().len());
    assert_eq!(&s.names[..BASE_FEATURES.len()], BASE_FEATURES);
    assert_eq!(s.names[0], "lang_python");
    assert_eq!(s.names[BASE_FEATURES.len() - 1], "hint_threads");
}

/// Each value lands under its own name: a job whose every base feature differs from the
/// default reads back through `get` by name.
#[test]
fn vector_values_sit_under_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(
        dir.path(),
        "a.sh",
        b"#!/bin/sh
java -Xmx3g -jar x.jar
sort --parallel=6 in > out
",
    );
    let input = write(dir.path(), "in.csv", &vec![b'x'; 2 * 1024 * 1024]);
    let prior = PriorRuns {
        count: 3,
        last_cpu_s: 1.0,
        mean_cpu_s: 2.0,
        max_cpu_s: 3.0,
        last_rss_mb: 4.0,
        mean_rss_mb: 5.0,
        max_rss_mb: 6.0,
        last_wall_s: 7.0,
        mean_wall_s: 8.0,
        max_wall_s: 9.0,
    };
    let command: Vec<OsString> = vec!["sh".into(), script.clone().into(), "1000".into()];
    let inputs = vec![input];
    let req = FeatureRequest {
        script: Some(&script),
        runtime: None,
        inputs: &inputs,
        command: &command,
        prior: &prior,
    };
    let e = extract(&req, &cat(), &ScanOptions::default()).unwrap();
    let v = &e.vector;
    assert_eq!(v.values.len(), v.schema.names.len());
    assert_eq!(v.get("lang_shell"), Some(1.0));
    assert_eq!(v.get("lang_python"), Some(0.0));
    assert_eq!(v.get("input_total_mb"), Some(2.0));
    assert_eq!(v.get("input_count"), Some(1.0));
    assert_eq!(v.get("input_total_log_mb"), Some(2f64.ln_1p()));
    assert_eq!(v.get("arg_numeric_count"), Some(1.0));
    assert_eq!(v.get("arg_max_numeric_log10"), Some(3.0));
    assert_eq!(v.get("prior_count"), Some(3.0));
    for (i, n) in [
        "prior_last_cpu_s",
        "prior_mean_cpu_s",
        "prior_max_cpu_s",
        "prior_last_rss_mb",
        "prior_mean_rss_mb",
        "prior_max_rss_mb",
        "prior_last_wall_s",
        "prior_mean_wall_s",
        "prior_max_wall_s",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(v.get(n), Some((i + 1) as f64), "{n}");
    }
    assert_eq!(v.get("hint_memory_mb"), Some(e.hints.memory_mb));
    assert_eq!(v.get("hint_threads"), Some(e.hints.threads));
    assert!(e.hints.memory_mb >= 3072.0, "{:?}", e.hints);
    assert!(e.hints.threads >= 6.0, "{:?}", e.hints);
}

#[test]
fn schema_hash_and_round_trip() {
    let c = cat();
    let s1 = Schema::for_catalog(&c);
    let s2 = Schema::for_catalog(&Catalog::builtin());
    assert_eq!(s1, s2);
    assert_eq!(s1.hash.len(), 16);
    assert!(s1.is_consistent());
    assert_eq!(s1.name, "presize-features");
    assert_eq!(s1.version, 1);
    for n in [
        "lib_scikit_learn_imported",
        "lib_data_table_usage",
        "lib_bioconductor_imported",
        "lib_seurat_usage",
        "input_total_log_mb",
        "prior_max_wall_s",
    ] {
        assert!(s1.index_of(n).is_some(), "{n}");
    }
    let uniq: BTreeSet<&String> = s1.names.iter().collect();
    assert_eq!(uniq.len(), s1.names.len());

    // Re-weighting changes no name; adding an entry does.
    let mut ov = BTreeMap::new();
    ov.insert(
        "Scanpy".to_string(),
        CatalogOverride {
            weight: 2.0,
            aliases: vec![],
        },
    );
    let c2 = Catalog::with_overrides(&ov);
    assert_eq!(Schema::for_catalog(&c2).hash, s1.hash);
    let sc = c2.entries().iter().find(|e| e.name == "scanpy").unwrap();
    assert_eq!(sc.weight, 2.0);
    assert_eq!(sc.aliases, vec!["scanpy".to_string()]);
    ov.insert(
        "STAR".to_string(),
        CatalogOverride {
            weight: 3.0,
            aliases: vec!["STARsolo".into()],
        },
    );
    let c3 = Catalog::with_overrides(&ov);
    let s3 = Schema::for_catalog(&c3);
    assert_ne!(s3.hash, s1.hash);
    assert!(s3.index_of("lib_star_usage").is_some());
    // The added entry matches shell programs.
    let (_, _, heavy) = scan_source(b"STAR --runThreadN 8\n", Language::Shell, &c3);
    assert!(heavy.iter().any(|h| h.0 == "STAR" && h.1));

    // Round trip through a map.
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "r.py", b"import torch\ntorch.zeros(1e3)\n");
    let prior = PriorRuns {
        count: 3,
        last_cpu_s: 1.5,
        mean_cpu_s: f64::NAN,
        max_wall_s: f64::INFINITY,
        ..PriorRuns::default()
    };
    let req = FeatureRequest {
        script: Some(&p),
        runtime: Some("python3"),
        inputs: &[],
        command: &[],
        prior: &prior,
    };
    let ex = extract(&req, &c, &ScanOptions::default()).unwrap();
    assert_finite(&ex.vector);
    assert_eq!(ex.vector.get("prior_count"), Some(3.0));
    assert_eq!(ex.vector.get("prior_mean_cpu_s"), Some(0.0));
    assert_eq!(ex.vector.get("prior_max_wall_s"), Some(0.0));
    assert_eq!(ex.vector.get("max_numeric_log10"), Some(3.0));
    let map = ex.vector.to_map();
    let back = FeatureVector::from_map(Arc::clone(&ex.vector.schema), &map);
    assert_eq!(back, ex.vector);
    let json = serde_json::to_value(&ex.vector).unwrap();
    assert_eq!(json["lib_torch_usage"], serde_json::json!(1.0));
    assert_eq!(json.as_object().unwrap().len(), s1.names.len());
    // Missing names become 0.
    let mut partial = BTreeMap::new();
    partial.insert("loops".to_string(), 2.0);
    partial.insert("unknown".to_string(), 9.0);
    let v = FeatureVector::from_map(Arc::clone(&ex.vector.schema), &partial);
    assert_eq!(v.get("loops"), Some(2.0));
    assert_eq!(v.get("calls"), Some(0.0));
    assert_eq!(v.get("unknown"), None);
}

#[test]
fn catalog_contents_and_aliases() {
    let c = cat();
    for name in [
        "scanpy",
        "anndata",
        "torch",
        "tensorflow",
        "jax",
        "pyscenic",
        "pymc",
        "numpy",
        "pandas",
        "scipy",
        "scikit-learn",
        "xgboost",
        "lightgbm",
        "dask",
        "polars",
        "pyarrow",
        "statsmodels",
        "Seurat",
        "DESeq2",
        "edgeR",
        "data.table",
        "Bioconductor",
    ] {
        assert!(c.entries().iter().any(|e| e.name == name), "{name}");
    }
    let name_of =
        |alias: &str, l: Language| c.lookup(alias, l).map(|i| c.entries()[i].name.clone());
    assert_eq!(
        name_of("sklearn", Language::Python).as_deref(),
        Some("scikit-learn")
    );
    assert_eq!(name_of("pymc3", Language::Python).as_deref(), Some("pymc"));
    assert_eq!(
        name_of("S4Vectors", Language::R).as_deref(),
        Some("Bioconductor")
    );
    assert_eq!(name_of("Seurat", Language::Python), None);
    assert_eq!(name_of("torch", Language::R).as_deref(), Some("torch"));
    let keys = c.keys().to_vec();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn extract_without_script() {
    let prior = PriorRuns::default();
    let cmd: Vec<OsString> = vec!["Rscript".into(), "-e".into(), "1".into()];
    let req = FeatureRequest {
        script: None,
        runtime: Some("Rscript"),
        inputs: &[],
        command: &cmd,
        prior: &prior,
    };
    let ex = extract(&req, &cat(), &ScanOptions::default()).unwrap();
    assert_eq!(ex.language, Language::R);
    assert!(ex.scan.is_none());
    assert_eq!(ex.vector.get("lang_r"), Some(1.0));
    assert_eq!(ex.vector.get("tokens"), Some(0.0));
    assert_finite(&ex.vector);
    let req = FeatureRequest {
        runtime: None,
        ..req
    };
    let ex = extract(&req, &cat(), &ScanOptions::default()).unwrap();
    assert_eq!(ex.vector.get("lang_other"), Some(1.0));
}

/// Deterministic pseudo-random bytes (64-bit LCG), biased towards bytes that
/// matter to the lexers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn bytes(&mut self) -> Vec<u8> {
        const ALPHABET: &[u8] =
            b"\"'`#\\()[]{}<>|&;$%:.=,!@*+-_~^\n\n\t \r\0\xff\xc3eEjLrRfbx0123456789aisnpcdtmlokw";
        const WORDS: &[&[u8]] = &[
            b"import ",
            b"from ",
            b" as ",
            b"library(",
            b"require(",
            b"::",
            b":::",
            b"\"\"\"",
            b"'''",
            b"r\"(",
            b")\"",
            b"$(",
            b"<<EOF\n",
            b"\nEOF\n",
            b"<<-",
            b"case ",
            b" in ",
            b";;",
            b"esac",
            b"function ",
            b"() {",
            b"for ",
            b"while ",
            b"do ",
            b"done",
            b"np.",
            b"sc.",
            b"import_module(\"",
            b"0x",
            b"1e",
            b"1_0",
            b"%dopar%",
            b"${",
            b"$((",
            b"((",
            b"```{r}\n",
            b"```\n",
            b"%%bash\n",
            b"xargs -P ",
            b"[[ ",
            b" ]]",
            b"\\\n",
        ];
        let len = (self.next() % 300) as usize;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = self.next();
            if r & 3 == 0 {
                out.extend_from_slice(WORDS[(r / 4) as usize % WORDS.len()]);
            } else if r & 3 == 1 {
                out.push((r >> 8) as u8);
            } else {
                out.push(ALPHABET[(r / 4) as usize % ALPHABET.len()]);
            }
        }
        out
    }
}

#[test]
fn no_panic_on_random_bytes() {
    let c = cat();
    let mut rng = Lcg(0x5eed);
    for _ in 0..3000 {
        let src = rng.bytes();
        for lang in [
            Language::Python,
            Language::R,
            Language::Shell,
            Language::Other,
        ] {
            let (imports, counts, heavy) = scan_source(&src, lang, &c);
            assert!(counts.max_numeric_log10.is_finite());
            assert!(counts.max_numeric_log10 >= 0.0);
            assert!(counts.code_lines + counts.comment_lines <= counts.lines);
            let newlines = src.iter().filter(|&&b| b == b'\n').count() as u64;
            let partial = u64::from(!src.is_empty() && !src.ends_with(b"\n"));
            assert_eq!(counts.lines, newlines + partial, "{lang:?} {src:?}");
            assert_eq!(heavy.len(), c.len());
            assert!(imports.len() <= src.len());
        }
        // A vector built from any scan is finite.
        let (imports, counts, heavy) = scan_source(&src, Language::Python, &c);
        let scan = ScriptScan {
            path: PathBuf::from("fuzz.py"),
            language: Language::Python,
            sha256: String::new(),
            bytes_read: src.len() as u64,
            file_bytes: src.len() as u64,
            truncated: false,
            imports,
            counts,
            heavy,
            hints: Default::default(),
        };
        let inputs = InputStats {
            total_bytes: u64::MAX,
            max_bytes: u64::MAX,
            count: u32::MAX,
        };
        let prior = PriorRuns {
            mean_rss_mb: f64::NAN,
            max_cpu_s: f64::NEG_INFINITY,
            ..PriorRuns::default()
        };
        assert_finite(&build_vector(
            &c,
            Language::Python,
            Some(&scan),
            &inputs,
            &ArgStats::default(),
            &prior,
            &hints::ResourceHints::default(),
        ));
        let _ = notebook::extract_notebook(&src, false);
        let _ = notebook::extract_notebook(&src, true);
        let _ = notebook::extract_rmd(&src);
    }
}

#[test]
fn no_panic_on_pathological_inputs() {
    let c = cat();
    let cases: Vec<Vec<u8>> = vec![
        vec![b'('; 100_000],
        vec![b')'; 1000],
        b"$(".repeat(1000),
        b"`".repeat(1001),
        b"\"$(".repeat(500),
        b"<<".repeat(500),
        b"<<E\n".repeat(100),
        "é".repeat(10_000).into_bytes(),
        vec![b'9'; 5000],
        [b"0x".as_slice(), &[b'f'; 400]].concat(),
        b"import ".repeat(5000),
        b"import a as b\n".repeat(500),
        b"library(".repeat(1000),
        b"\\".to_vec(),
        b"'".to_vec(),
        b"\"\"\"".to_vec(),
        b"r\"(".to_vec(),
        b"`".to_vec(),
        b"1e".to_vec(),
        vec![b'a'; 1_000_000],
        vec![b'\n'; 10_000],
    ];
    for src in &cases {
        for lang in [Language::Python, Language::R, Language::Shell] {
            let (_, counts, _) = scan_source(src, lang, &c);
            assert!(counts.max_numeric_log10.is_finite());
        }
        let _ = notebook::extract_notebook(src, true);
    }
    // Deeply nested notebook JSON hits serde_json's recursion limit, not the stack.
    let deep = format!(
        "{{\"cells\": {}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(notebook::extract_notebook(deep.as_bytes(), false).is_err());
}

#[test]
fn numeric_arguments_are_features() {
    let cmd: Vec<OsString> = [
        "python3",
        "sim.py",
        "--cells",
        "20000",
        "--genes=1_000",
        "-v",
        "n=0.5",
        "x1",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let a = arg_stats(&cmd);
    assert_eq!(a.count, 3);
    assert!((a.max_log10 - 20000f64.log10()).abs() < 1e-12);
    assert!((a.log10_sum - (20000f64.log10() + 3.0)).abs() < 1e-12);
    assert_eq!(arg_stats(&cmd[..1]), ArgStats::default());
}

#[test]
fn sha256_is_optional_and_changes_no_feature() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.py",
        b"import numpy as np\nx = np.zeros(10)\n",
    );
    let with = scan_script(&p, None, &cat(), &ScanOptions::default()).unwrap();
    assert_eq!(with.sha256.len(), 64);
    let opts = ScanOptions {
        script_sha256: false,
        ..ScanOptions::default()
    };
    let without = scan_script(&p, None, &cat(), &opts).unwrap();
    assert_eq!(without.sha256, "");
    assert_eq!(
        ScriptScan {
            sha256: with.sha256.clone(),
            ..without.clone()
        },
        with
    );
    let prior = PriorRuns::default();
    let req = FeatureRequest {
        script: Some(&p),
        runtime: None,
        inputs: &[],
        command: &[],
        prior: &prior,
    };
    let a = extract(&req, &cat(), &ScanOptions::default()).unwrap();
    let b = extract(&req, &cat(), &opts).unwrap();
    assert_eq!(a.vector.values, b.vector.values);
}

#[path = "../../benches/common/mod.rs"]
mod bench_common;
mod python_golden;
