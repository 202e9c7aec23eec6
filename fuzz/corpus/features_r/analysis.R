#!/usr/bin/env Rscript
# Fixture: an R analysis (not run by the tests)
library(Seurat)
require("DESeq2")
requireNamespace('edgeR')
dt <- data.table::fread("counts.tsv")
obj <- CreateSeuratObject(counts = dt)
for (i in 1:10) {
  obj <- NormalizeData(obj)
}
