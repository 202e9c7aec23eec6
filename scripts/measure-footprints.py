#!/usr/bin/env python3
"""Measure import footprints for presize's cold-start prior.

For the bare interpreter and for each heavy library in presize's catalog this
starts a fresh child process per sample, imports the library there and records

  * peak RSS (VmHWM from /proc/self/status at the end of the child, plus
    resource.getrusage(RUSAGE_SELF).ru_maxrss as a cross-check),
  * wall time of the import (time.perf_counter around it),
  * CPU time of the import (os.times() user+sys around it).

Each measurement is repeated (default 3 times, after one discarded warm-up run
that fills the page cache and writes .pyc files) and the median is kept. A
library's footprint is its median peak RSS minus the bare interpreter's median
peak RSS. Libraries that cannot be imported here are reported from a built-in
table of estimates, marked "source": "estimate" with a note saying where the
number comes from.

Optional parts:
  --r            measure R (Rscript) and the R packages of the catalog from the
                 outside: peak RSS via os.wait4() rusage of the Rscript process,
                 minus a bare `Rscript -e 0`.
  --input-terms  measure the per-input-MB terms of the prior on a generated CSV
                 (pandas.read_csv / stdlib csv, data.table::fread, sort / awk).

Stdlib only; run it with the interpreter whose libraries you want measured:

    .venv-footprint/bin/python scripts/measure-footprints.py --r --input-terms > models/prior.json

The JSON document goes to stdout, progress to stderr.
"""

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

FORMAT_VERSION = 1
GENERATED_BY = "scripts/measure-footprints.py"

# catalog key -> modules to import (in order) and the distribution whose version we report
PY_LIBS = [
    ("scanpy", ["scanpy"], "scanpy"),
    ("anndata", ["anndata"], "anndata"),
    ("torch", ["torch"], "torch"),
    ("tensorflow", ["tensorflow"], "tensorflow-cpu"),
    ("jax", ["jax"], "jax"),
    # `import pyscenic` alone loads next to nothing; a SCENIC script imports the
    # working modules. pyscenic.prune is left out: on numpy >= 2 it fails at
    # import (np.object), see the README.
    ("pyscenic", ["pyscenic", "pyscenic.utils", "pyscenic.aucell", "arboreto.algo", "ctxcore.rnkdb"], "pyscenic"),
    ("pymc", ["pymc"], "pymc"),
    ("numpy", ["numpy"], "numpy"),
    ("pandas", ["pandas"], "pandas"),
    ("scipy", ["scipy"], "scipy"),
    ("scikit-learn", ["sklearn"], "scikit-learn"),
    ("xgboost", ["xgboost"], "xgboost"),
    ("lightgbm", ["lightgbm"], "lightgbm"),
    ("dask", ["dask"], "dask"),
    ("polars", ["polars"], "polars"),
    ("pyarrow", ["pyarrow"], "pyarrow"),
    ("statsmodels", ["statsmodels.api"], "statsmodels"),
    ("matplotlib", ["matplotlib.pyplot"], "matplotlib"),
    ("seaborn", ["seaborn"], "seaborn"),
    ("h5py", ["h5py"], "h5py"),
    ("numba", ["numba"], "numba"),
]

# catalog key -> R package name
R_LIBS = [
    ("seurat", "Seurat"),
    ("deseq2", "DESeq2"),
    ("edger", "edgeR"),
    ("data.table", "data.table"),
    ("biocgenerics", "BiocGenerics"),
    ("s4vectors", "S4Vectors"),
    ("summarizedexperiment", "SummarizedExperiment"),
    ("singlecellexperiment", "SingleCellExperiment"),
    ("ggplot2", "ggplot2"),
    ("dplyr", "dplyr"),
    ("tidyverse", "tidyverse"),
    ("matrix", "Matrix"),
]

# Used only for what cannot be measured on the machine running this script.
# Every entry says where its number comes from.
PY_ESTIMATES = {
    "torch": (350, 1.5, 1.4, "not installed here: the PyPI Linux wheel pulls > 2 GB of CUDA wheels and no CPU-only "
              "wheel is on PyPI itself; estimate from public reports of ~300-400 MB RSS after `import torch` on CPU"),
    "tensorflow": (450, 3.0, 3.0, "not importable here; estimate from public reports of ~400-500 MB RSS and 2-4 s "
                   "after `import tensorflow` (CPU build)"),
    "jax": (120, 0.8, 0.8, "not importable here; estimate: jaxlib's XLA extension is ~100 MB resident after import"),
    "pyscenic": (250, 3.0, 3.0, "not importable here; estimate: pyscenic/arboreto import dask.distributed, pandas, "
                 "pyarrow and scikit-learn, so roughly the sum of those footprints"),
    "scanpy": (230, 3.0, 3.0, "not importable here; estimate: scanpy imports anndata, pandas, scipy, scikit-learn, "
               "numba and matplotlib"),
    "anndata": (90, 1.0, 1.0, "not importable here; estimate: anndata imports pandas, scipy.sparse, h5py and zarr"),
    "pymc": (200, 3.0, 3.0, "not importable here; estimate: pymc imports pytensor, arviz, xarray, scipy and pandas"),
    "numpy": (20, 0.1, 0.1, "not importable here; estimate: numpy + OpenBLAS ~15-25 MB resident"),
    "pandas": (55, 0.4, 0.4, "not importable here; estimate: pandas imports numpy, dateutil, pytz"),
    "scipy": (35, 0.2, 0.2, "not importable here; estimate: `import scipy` is lazy, a little over numpy"),
    "scikit-learn": (90, 0.8, 0.8, "not importable here; estimate: sklearn imports numpy, scipy, joblib"),
    "xgboost": (90, 0.6, 0.6, "not importable here; estimate: libxgboost.so plus numpy/scipy"),
    "lightgbm": (80, 0.6, 0.6, "not importable here; estimate: lib_lightgbm.so plus numpy/scipy"),
    "dask": (30, 0.2, 0.2, "not importable here; estimate: `import dask` is light until dask.dataframe is used"),
    "polars": (60, 0.2, 0.2, "not importable here; estimate: one large Rust shared library"),
    "pyarrow": (60, 0.2, 0.2, "not importable here; estimate: libarrow shared libraries"),
    "statsmodels": (110, 1.0, 1.0, "not importable here; estimate: statsmodels.api imports scipy, pandas, patsy"),
    "matplotlib": (50, 0.4, 0.4, "not importable here; estimate: matplotlib.pyplot with the Agg backend"),
    "seaborn": (90, 0.8, 0.8, "not importable here; estimate: seaborn imports matplotlib, pandas, scipy"),
    "h5py": (30, 0.2, 0.2, "not importable here; estimate: libhdf5 plus numpy"),
    "numba": (70, 0.6, 0.6, "not importable here; estimate: llvmlite's LLVM shared library plus numpy"),
}

# Added to measured entries: what the number includes beyond the library itself.
MEASURED_NOTES = {
    "pandas": "pandas imports pyarrow and numexpr when they are installed (they are in the measuring venv); "
              "without them `import pandas` was ~60 MiB here",
    "tensorflow": "keras 3 imports the other installed backends and their deps (jax, pandas, scipy, h5py are in "
                  "the measuring venv); a tensorflow-only environment is lower",
    "jax": "import only; the XLA CPU backend allocates more at the first jax.numpy operation",
    "pyscenic": "pyscenic.prune is left out: it fails at import with numpy >= 2 (np.object), so prune2df users "
                "need a numpy < 2 environment",
}

R_ESTIMATES = {
    "seurat": (500, 6.0, 6.0),
    "deseq2": (150, 4.0, 4.0),
    "edger": (40, 0.5, 0.5),
    "data.table": (10, 0.1, 0.1),
    "biocgenerics": (10, 0.3, 0.3),
    "s4vectors": (30, 1.0, 1.0),
    "summarizedexperiment": (110, 3.0, 3.0),
    "singlecellexperiment": (115, 3.2, 3.2),
    "ggplot2": (35, 0.5, 0.5),
    "dplyr": (20, 0.3, 0.3),
    "tidyverse": (90, 1.5, 1.5),
    "matrix": (15, 0.2, 0.2),
}
R_ESTIMATE_NOTE = ("R not measured (run with --r on a host with R); rough estimate of RSS growth after "
                   "library() of the package and its dependencies")
R_BASE_ESTIMATE = (50, 0.15, 0.12)

# Defaults of the prior's input terms, used when --input-terms is not given.
INPUT_TERM_DEFAULTS = {
    "python": (1.0, 0.02, "estimate: in-memory expansion of a parsed tabular file is ~1-5x; 1.0 MB/MB is a "
               "deliberately low central estimate (the upper bound uses x4); 50 MB/s throughput"),
    "r": (1.0, 0.02, "estimate: as for python"),
    "shell": (0.05, 0.02, "estimate: shell pipelines are mostly streaming tools; 50 MB/s throughput"),
}

# The child: import the modules given as arguments and report what it cost.
PY_CHILD = r"""
import os, sys, time, json, resource, importlib
def status_kb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return None
w0 = time.perf_counter(); c0 = os.times()
for m in sys.argv[1:]:
    importlib.import_module(m)
w1 = time.perf_counter(); c1 = os.times()
end = os.times()
print(json.dumps({
    'import_wall_s': w1 - w0,
    'import_cpu_s': (c1.user - c0.user) + (c1.system - c0.system),
    'total_cpu_s': end.user + end.system,
    'vmhwm_mb': status_kb('VmHWM') / 1024.0,
    'vmrss_mb': status_kb('VmRSS') / 1024.0,
    'ru_maxrss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
}))
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_child(argv, timeout=600, env=None):
    """Run argv; return (stdout, returncode, wall_s, rusage of that child alone).

    os.wait4 gives the rusage of exactly this child (and the descendants it
    reaped), so ru_maxrss is the peak RSS of the largest process in its tree --
    unlike RUSAGE_CHILDREN, which is a running maximum over all children ever.
    """
    errf = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL, env=env)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    try:
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    errf.seek(0)
    err = errf.read().decode("utf-8", "replace")
    errf.close()
    return out.decode("utf-8", "replace"), p.returncode, wall, ru, err


def median(xs):
    return statistics.median(xs)


def rnd(x, nd=3):
    return round(x, nd)


def measure_python(python, modules, repeats):
    """Median measurements of importing `modules` in fresh interpreters."""
    samples = []
    for i in range(repeats + 1):  # first run is a discarded warm-up
        out, rc, wall, ru, err = run_child([python, "-c", PY_CHILD] + list(modules))
        if rc != 0:
            last = err.strip().splitlines()[-1] if err.strip() else "exit %d" % rc
            raise RuntimeError(last)
        if i == 0:
            continue
        d = json.loads(out.strip().splitlines()[-1])
        d["process_wall_s"] = wall
        d["wait4_maxrss_mb"] = ru.ru_maxrss / 1024.0
        samples.append(d)
    keys = samples[0].keys()
    return {k: median([s[k] for s in samples]) for k in keys}, samples


def dist_version(python, dist):
    code = "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept Exception: print('')"
    out, rc, _, _, _ = run_child([python, "-c", code, dist])
    return out.strip() or None


GNU_TIME = "/usr/bin/time"
USE_GNU_TIME = False


def have_gnu_time():
    if not os.access(GNU_TIME, os.X_OK):
        return False
    out, rc, _, _, err = run_child([GNU_TIME, "-f", "%M", "true"])
    return rc == 0 and err.strip().splitlines()[-1:] and err.strip().splitlines()[-1].isdigit()


def external_peak(argv, env=None):
    """Run argv once; return (stdout, wall_s, cpu_s, peak_rss_mb, how).

    Why not wait4()/RUSAGE_CHILDREN of our own child: Linux carries ru_maxrss
    across fork+exec, so a child spawned from this Python process reports at
    least this process's RSS (~15 MiB) even for `bash -c true`. GNU time forks
    the command from a ~1 MiB process and reports its rusage (the maximum over
    the command's process tree), which is exact to ~1 MiB.
    """
    if USE_GNU_TIME:
        fd, path = tempfile.mkstemp(prefix="presize-time-")
        os.close(fd)
        try:
            out, rc, wall, ru, err = run_child([GNU_TIME, "-o", path, "-f", "%M"] + list(argv), env=env)
            with open(path) as f:
                lines = [l for l in f.read().split() if l.strip()]
        finally:
            os.unlink(path)
        if rc != 0:
            raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else "exit %d" % rc)
        return out, wall, ru.ru_utime + ru.ru_stime, int(lines[-1]) / 1024.0, "gnu-time"
    out, rc, wall, ru, err = run_child(argv, env=env)
    if rc != 0:
        raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else "exit %d" % rc)
    return out, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, "wait4"


def measure_external(argv, repeats, env=None, rss_from_stdout=False):
    """Median peak RSS / wall / cpu of a command, measured from outside.

    With rss_from_stdout the command prints its own VmHWM (kB) as the last
    token of its stdout (used for R, which can read /proc/self/status itself).
    """
    rss, ext, wall, cpu = [], [], [], []
    out = ""
    for i in range(repeats + 1):
        out, w, c, peak, how = external_peak(argv, env=env)
        if i == 0:
            continue
        ext.append(peak)
        rss.append(int(out.split()[-1]) / 1024.0 if rss_from_stdout else peak)
        wall.append(w)
        cpu.append(c)
    return {"rss_mb": median(rss), "external_rss_mb": median(ext), "wall_s": median(wall),
            "cpu_s": median(cpu), "last_stdout": out}


def machine_string():
    u = os.uname()
    cpu = platform.processor() or u.machine
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = int(line.split()[1]) / 1024.0 / 1024.0
                    break
    except OSError:
        pass
    return "%s %s %s, %s, %d cores, %.0f GiB" % (u.sysname, u.release, u.machine, cpu, os.cpu_count() or 0, mem_gib)


# ---------------------------------------------------------------- python

def python_part(python, repeats, only):
    log("python: bare interpreter %s" % python)
    base, base_samples = measure_python(python, [], repeats)
    pyver_out, _, _, _, _ = run_child([python, "-c", "import platform; print(platform.python_version())"])
    runtime = {
        "base_rss_mb": rnd(base["vmhwm_mb"], 1),
        "base_wall_s": rnd(base["process_wall_s"]),
        "base_cpu_s": rnd(base["total_cpu_s"]),
        "source": "measured",
        "version": pyver_out.strip(),
    }
    log("  base VmHWM %.1f MiB (ru_maxrss %.1f), wall %.3f s, cpu %.3f s" % (
        base["vmhwm_mb"], base["ru_maxrss_mb"], base["process_wall_s"], base["total_cpu_s"]))
    libs = {}
    detail = {}
    for key, modules, dist in PY_LIBS:
        if only and key not in only:
            continue
        log("python: %s (import %s)" % (key, ", ".join(modules)))
        try:
            m, _ = measure_python(python, modules, repeats)
        except Exception as e:  # not installed or broken here: fall back to the estimate table
            rss, wall, cpu, note = PY_ESTIMATES[key]
            reason = str(e).strip()
            log("  not measured (%s): using estimate" % reason)
            libs[key] = {"language": "python", "rss_mb": rss, "wall_s": wall, "cpu_s": cpu,
                         "source": "estimate", "note": note}
            continue
        entry = {
            "language": "python",
            "rss_mb": rnd(max(0.0, m["vmhwm_mb"] - base["vmhwm_mb"]), 1),
            "wall_s": rnd(m["import_wall_s"]),
            "cpu_s": rnd(m["import_cpu_s"]),
            "source": "measured",
            "version": dist_version(python, dist),
        }
        notes = []
        if modules != [key]:
            notes.append("measured as: import " + ", ".join(modules))
        if key in MEASURED_NOTES:
            notes.append(MEASURED_NOTES[key])
        if notes:
            entry["note"] = "; ".join(notes)
        libs[key] = entry
        detail[key] = {"peak_rss_mb": rnd(m["vmhwm_mb"], 1), "ru_maxrss_mb": rnd(m["ru_maxrss_mb"], 1),
                       "process_wall_s": rnd(m["process_wall_s"])}
        log("  +%.1f MiB (peak %.1f, ru_maxrss %.1f), import %.3f s wall, %.3f s cpu, v%s" % (
            entry["rss_mb"], m["vmhwm_mb"], m["ru_maxrss_mb"], entry["wall_s"], entry["cpu_s"], entry["version"]))
    return runtime, libs, detail


# ---------------------------------------------------------------- R

# R prints its own peak RSS (kB) last, read from /proc/self/status like the Python child.
R_HWM = r"""cat('\n', gsub('[^0-9]', '', grep('^VmHWM', readLines('/proc/self/status'), value = TRUE)), '\n', sep = '')"""


def r_part(rscript, repeats, only):
    env = dict(os.environ, LANG="C.UTF-8")
    log("r: bare %s -e 0" % rscript)
    base = measure_external([rscript, "-e", R_HWM], repeats, env=env, rss_from_stdout=True)
    ver_out, _, _, _, _ = run_child([rscript, "-e", "cat(R.version$major, R.version$minor, sep='.')"], env=env)
    runtime = {
        "base_rss_mb": rnd(base["rss_mb"], 1),
        "base_wall_s": rnd(base["wall_s"]),
        "base_cpu_s": rnd(base["cpu_s"]),
        "source": "measured",
        "version": ver_out.strip(),
    }
    log("  base VmHWM %.1f MiB (process tree peak %.1f), wall %.3f s, cpu %.3f s" % (
        base["rss_mb"], base["external_rss_mb"], base["wall_s"], base["cpu_s"]))
    libs = {}
    for key, pkg in R_LIBS:
        if only and key not in only:
            continue
        log("r: %s (library(%s))" % (key, pkg))
        try:
            m = measure_external([rscript, "-e", "suppressMessages(library(%s)); %s" % (pkg, R_HWM)], repeats,
                                 env=env, rss_from_stdout=True)
        except Exception as e:
            rss, wall, cpu = R_ESTIMATES[key]
            log("  not measured (%s): using estimate" % e)
            libs[key] = {"language": "r", "rss_mb": rss, "wall_s": wall, "cpu_s": cpu, "source": "estimate",
                         "note": "package not loadable here; " + R_ESTIMATE_NOTE}
            continue
        vout, _, _, _, _ = run_child([rscript, "-e", "cat(as.character(packageVersion('%s')))" % pkg], env=env)
        libs[key] = {
            "language": "r",
            "rss_mb": rnd(max(0.0, m["rss_mb"] - base["rss_mb"]), 1),
            "wall_s": rnd(max(0.0, m["wall_s"] - base["wall_s"])),
            "cpu_s": rnd(max(0.0, m["cpu_s"] - base["cpu_s"])),
            "source": "measured",
            "version": vout.strip() or None,
        }
        log("  +%.1f MiB (VmHWM %.1f, process tree peak %.1f), +%.3f s wall, +%.3f s cpu, v%s" % (
            libs[key]["rss_mb"], m["rss_mb"], m["external_rss_mb"], libs[key]["wall_s"], libs[key]["cpu_s"],
            libs[key]["version"]))
    return runtime, libs


def r_estimates():
    rss, wall, cpu = R_BASE_ESTIMATE
    runtime = {"base_rss_mb": rss, "base_wall_s": wall, "base_cpu_s": cpu, "source": "estimate",
               "version": None, "note": "R not measured (run with --r on a host with Rscript)"}
    libs = {k: {"language": "r", "rss_mb": v[0], "wall_s": v[1], "cpu_s": v[2], "source": "estimate",
                "note": R_ESTIMATE_NOTE} for k, v in R_ESTIMATES.items()}
    return runtime, libs


# ---------------------------------------------------------------- shell

def shell_part(repeats):
    bash = shutil.which("bash") or "/bin/bash"
    log("shell: %s -c true" % bash)
    m = measure_external([bash, "-c", "true"], repeats)
    vout, _, _, _, _ = run_child([bash, "-c", "echo $BASH_VERSION"])
    return {"base_rss_mb": rnd(m["rss_mb"], 1), "base_wall_s": rnd(m["wall_s"]), "base_cpu_s": rnd(m["cpu_s"]),
            "source": "measured", "version": "bash " + vout.strip()}


# ---------------------------------------------------------------- input terms

def make_csv(path, target_mb, seed=0):
    """Deterministic numeric CSV: an id column and 10 float columns, ~target_mb MB."""
    rng = random.Random(seed)
    target = int(target_mb * 1e6)
    with open(path, "w") as f:
        f.write("id," + ",".join("x%d" % j for j in range(10)) + "\n")
        i = 0
        size = 0
        while size < target:
            rows = []
            for _ in range(1000):
                rows.append("r%d," % i + ",".join("%.4f" % rng.gauss(100, 30) for _ in range(10)))
                i += 1
            chunk = "\n".join(rows) + "\n"
            f.write(chunk)
            size += len(chunk)
    return os.path.getsize(path) / 1e6  # MB (10^6 bytes), the unit of input_MB


PANDAS_INPUT_CHILD = r"""
import os, sys, time, json
def hwm():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
import pandas as pd
h0 = hwm(); t0 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
t1 = time.perf_counter()
s = df.select_dtypes('number').mean().sum()
print(json.dumps({'rss_before_mb': h0, 'rss_after_mb': hwm(), 'read_s': t1 - t0,
                  'frame_mb': df.memory_usage(deep=True).sum() / 2**20}))
"""

STDLIB_INPUT_CHILD = r"""
import csv, sys, time, json
def hwm():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
h0 = hwm(); t0 = time.perf_counter()
cols = None
with open(sys.argv[1], newline='') as f:
    r = csv.reader(f)
    header = next(r)
    cols = [[] for _ in header[1:]]
    for row in r:
        for j, v in enumerate(row[1:]):
            cols[j].append(float(v))
t1 = time.perf_counter()
print(json.dumps({'rss_before_mb': h0, 'rss_after_mb': hwm(), 'read_s': t1 - t0}))
"""


def input_terms_part(python, rscript, repeats, input_mb, have_r):
    tmp = tempfile.mkdtemp(prefix="presize-input-terms-")
    try:
        path = os.path.join(tmp, "input.csv")
        mb = make_csv(path, input_mb)
        log("input terms: generated %s (%.1f MB)" % (path, mb))
        terms = {}

        def py_runs(child):
            runs = []
            for i in range(repeats + 1):
                out, rc, wall, ru, err = run_child([python, "-c", child, path])
                if rc != 0:
                    raise RuntimeError(err.strip().splitlines()[-1] if err.strip() else "exit %d" % rc)
                if i:
                    runs.append(json.loads(out.strip().splitlines()[-1]))
            rss = median([(r["rss_after_mb"] - r["rss_before_mb"]) / mb for r in runs])
            sec = median([r["read_s"] / mb for r in runs])
            return rss, sec

        alternatives = {}
        try:
            s_rss, s_sec = py_runs(STDLIB_INPUT_CHILD)
            alternatives["stdlib_csv_lists_of_floats"] = {"rss_mb_per_input_mb": rnd(s_rss), "s_per_input_mb": rnd(s_sec, 4)}
            log("  python stdlib csv -> lists of floats: %.3f MB/MB, %.4f s/MB" % (s_rss, s_sec))
        except Exception as e:
            log("  python stdlib csv failed: %s" % e)
        try:
            p_rss, p_sec = py_runs(PANDAS_INPUT_CHILD)
            log("  python pandas.read_csv: %.3f MB/MB, %.4f s/MB" % (p_rss, p_sec))
            terms["python"] = {"rss_mb_per_input_mb": rnd(p_rss), "s_per_input_mb": rnd(p_sec, 4),
                               "source": "measured",
                               "method": "pandas.read_csv of a %.0f MB numeric CSV (id + 10 float columns): "
                                         "VmHWM growth and read time per input MB, median of %d" % (mb, repeats),
                               "alternatives": alternatives}
        except Exception as e:
            log("  pandas not available (%s)" % e)
            if alternatives:
                a = alternatives["stdlib_csv_lists_of_floats"]
                terms["python"] = dict(a, source="measured",
                                       method="stdlib csv into lists of floats, %.0f MB numeric CSV" % mb)

        if have_r:
            env = dict(os.environ, LANG="C.UTF-8")
            try:
                code = ("suppressMessages(library(data.table)); "
                        "hwm <- function() as.numeric(gsub('[^0-9]', '', grep('^VmHWM', "
                        "readLines('/proc/self/status'), value = TRUE))) / 1024; "
                        "h0 <- hwm(); t <- system.time(d <- fread(commandArgs(TRUE)[1]))[['elapsed']]; "
                        "cat(h0, hwm(), t, '\\n')")
                rss, sec = [], []
                for i in range(repeats + 1):
                    out, rc, wall, ru, err = run_child([rscript, "-e", code, path], env=env)
                    if rc != 0:
                        raise RuntimeError(err.strip())
                    if i:
                        h0, h1, t = (float(x) for x in out.split()[-3:])
                        rss.append((h1 - h0) / mb)
                        sec.append(t / mb)
                terms["r"] = {"rss_mb_per_input_mb": rnd(median(rss)), "s_per_input_mb": rnd(median(sec), 4),
                              "source": "measured",
                              "method": "data.table::fread of the same CSV: VmHWM growth across fread and its "
                                        "elapsed time, per input MB, median of %d" % repeats}
                log("  r fread: %.3f MB/MB, %.4f s/MB" % (median(rss), median(sec)))
            except Exception as e:
                log("  r fread failed: %s" % e)

        sh = "/bin/sh"
        base = measure_external([sh, "-c", "true"], repeats)
        shell_alt = {}
        pipelines = {
            "awk_column_sum": "awk -F, 'NR>1{s+=$2} END{print s}' \"$1\"",
            "sort_uniq_count": "sort \"$1\" | uniq -c | sort -rn | head -n 5",
        }
        for name, script in pipelines.items():
            m = measure_external([sh, "-c", script, "sh", path], repeats, env=dict(os.environ, LC_ALL="C"))
            shell_alt[name] = {"rss_mb_per_input_mb": rnd(max(0.0, m["rss_mb"] - base["rss_mb"]) / mb, 4),
                               "s_per_input_mb": rnd(m["wall_s"] / mb, 4)}
            log("  shell %s: %.4f MB/MB, %.4f s/MB" % (name, shell_alt[name]["rss_mb_per_input_mb"],
                                                      shell_alt[name]["s_per_input_mb"]))
        central = shell_alt["awk_column_sum"]
        terms["shell"] = {"rss_mb_per_input_mb": central["rss_mb_per_input_mb"],
                          "s_per_input_mb": central["s_per_input_mb"], "source": "measured",
                          "method": "streaming awk over the same CSV (peak RSS of the pipeline over `sh -c true`, "
                                    "wall per input MB, median of %d); sort-based pipelines hold their input in "
                                    "memory, see alternatives (sort FILE | uniq -c | sort -rn | head)" % repeats,
                          "alternatives": {"sort_uniq_count": shell_alt["sort_uniq_count"]}}
        return terms
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def default_input_terms():
    return {k: {"rss_mb_per_input_mb": v[0], "s_per_input_mb": v[1], "source": "estimate", "note": v[2]}
            for k, v in INPUT_TERM_DEFAULTS.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    ap.add_argument("--repeats", type=int, default=3, help="measured runs per item, median kept (default 3)")
    ap.add_argument("--only", nargs="*", help="measure only these catalog keys")
    ap.add_argument("--r", action="store_true", help="also measure Rscript and the R packages")
    ap.add_argument("--rscript", default=shutil.which("Rscript") or "Rscript")
    ap.add_argument("--input-terms", action="store_true", help="measure the per-input-MB terms on a generated CSV")
    ap.add_argument("--input-mb", type=float, default=50.0, help="size of the generated CSV (default 50 MB)")
    ap.add_argument("--detail", metavar="FILE", help="also write absolute per-library peaks to FILE (JSON)")
    args = ap.parse_args()
    global USE_GNU_TIME
    USE_GNU_TIME = have_gnu_time()
    if not USE_GNU_TIME:
        log("warning: GNU time (%s) not found; external peaks include this process's RSS "
            "(Linux keeps ru_maxrss across fork+exec) and are upper bounds" % GNU_TIME)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    only = set(args.only) if args.only else None

    py_runtime, py_libs, detail = python_part(args.python, args.repeats, only)

    have_r = False
    if args.r:
        if shutil.which(args.rscript) or os.path.exists(args.rscript):
            r_runtime, r_libs = r_part(args.rscript, args.repeats, only)
            have_r = True
        else:
            log("r: %s not found, using estimates" % args.rscript)
            r_runtime, r_libs = r_estimates()
    else:
        r_runtime, r_libs = r_estimates()
        if only:
            r_libs = {k: v for k, v in r_libs.items() if k in only}

    shell_runtime = shell_part(args.repeats)

    input_terms = default_input_terms()
    if args.input_terms:
        input_terms.update(input_terms_part(args.python, args.rscript, args.repeats, args.input_mb, have_r))

    doc = {
        "format_version": FORMAT_VERSION,
        "generated_by": GENERATED_BY,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_string(),
        "runtimes": {
            "python": py_runtime,
            "r": r_runtime,
            "shell": shell_runtime,
            "other": {"base_rss_mb": 16, "base_wall_s": 0.05, "base_cpu_s": 0.02, "source": "estimate",
                      "note": "unknown runtime: a small compiled program or interpreter"},
        },
        "libraries": dict(py_libs, **r_libs),
        "input_terms": input_terms,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")
    if args.detail:
        with open(args.detail, "w") as f:
            json.dump(detail, f, indent=1)


if __name__ == "__main__":
    main()
