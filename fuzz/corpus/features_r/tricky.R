library(Seurat); require("data.table"); requireNamespace('x')
pacman::p_load(dplyr, ggplot2)
s <- r"(raw ( string)" ; t <- R"[x]" ; `odd name` <- 1e6L + 0x10L + 2i
f <- function(x, ...) x %>% dplyr::filter(y > 1)
g <- \(x) x + 1
for (i in seq_len(10)) { repeat { break } }
while (FALSE) NULL
obj <- RunPCA(obj); dt <- fread("a.tsv"); m <- readRDS('m.rds')
future::plan(multisession); r <- mclapply(1:4, f, mc.cores = 4)
foreach(i = 1:3) %dopar% { i }
# comment only
