#!/usr/bin/env Rscript
# Single-cell QC and a first-pass Seurat workflow on a gene x cell count table.
#
#   Rscript qc.R COUNTS.csv [OUT_PREFIX] [MIN_FEATURES]
#
# COUNTS.csv: first column gene names, then one column per cell (as written by
# `make_table.py OUT --rows GENES --cols CELLS`). Writes OUT_PREFIX_qc.csv (per-
# cell QC metrics) and OUT_PREFIX_seurat.rds. Memory: the dense table read by
# fread (~2.3 MB per MB of CSV here) plus its sparse copy in the Seurat object,
# plus ~360 MB for loading Seurat itself. Needs data.table, Matrix and Seurat.
# Prints one summary line.

suppressPackageStartupMessages({
  library(data.table)
  library(Matrix)
  library(Seurat)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) {
  message("usage: Rscript qc.R COUNTS.csv [OUT_PREFIX] [MIN_FEATURES]")
  quit(status = 2)
}
counts_path  <- args[[1]]
out_prefix   <- if (length(args) >= 2) args[[2]] else sub("\\.csv$", "", counts_path)
min_features <- if (length(args) >= 3) as.integer(args[[3]]) else 5L
if (!file.exists(counts_path)) {
  message("qc.R: cannot read ", counts_path)
  quit(status = 2)
}

set.seed(1)
dt <- fread(counts_path)
genes <- dt[[1]]
m <- as.matrix(dt[, -1, with = FALSE])
rownames(m) <- genes
counts <- Matrix(m, sparse = TRUE)
rm(dt, m); invisible(gc())

obj <- CreateSeuratObject(counts = counts, project = "qc", min.cells = 1, min.features = min_features)
# synthetic data has no MT- genes; call it anyway, as real QC scripts do
obj[["percent.mt"]] <- PercentageFeatureSet(obj, pattern = "^MT-")

qc <- data.table(cell = colnames(obj),
                 nCount_RNA = obj$nCount_RNA,
                 nFeature_RNA = obj$nFeature_RNA,
                 percent_mt = obj$percent.mt)
lo <- median(qc$nCount_RNA) - 3 * mad(qc$nCount_RNA)
qc[, pass := nCount_RNA > lo & nFeature_RNA >= min_features]
fwrite(qc, paste0(out_prefix, "_qc.csv"))

obj <- subset(obj, cells = qc[pass == TRUE, cell])
obj <- NormalizeData(obj, normalization.method = "LogNormalize", scale.factor = 1e4, verbose = FALSE)
n_var <- min(2000L, nrow(obj))
obj <- FindVariableFeatures(obj, selection.method = "vst", nfeatures = n_var, verbose = FALSE)
obj <- ScaleData(obj, features = VariableFeatures(obj), verbose = FALSE)
n_pcs <- max(2L, min(20L, ncol(obj) - 1L, n_var - 1L))
obj <- RunPCA(obj, features = VariableFeatures(obj), npcs = n_pcs, verbose = FALSE)
saveRDS(obj, paste0(out_prefix, "_seurat.rds"))

sdev <- Stdev(obj, reduction = "pca")
cat(sprintf("qc.R: %s: %d genes x %d cells, %d pass QC, %d variable genes, PC1 sd %.3f\n",
            counts_path, nrow(counts), ncol(counts), sum(qc$pass), n_var, sdev[[1]]))
