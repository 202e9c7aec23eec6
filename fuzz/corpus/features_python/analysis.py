#!/usr/bin/env python3
"""Fixture: a pandas/numpy analysis (not run by the tests)."""
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

# import scipy  <- a comment, not an import
table = pd.read_csv("counts.csv")
for col in table.columns:
    table[col] = np.log1p(table[col])
pca = PCA(n_components=50)
emb = pca.fit_transform(table.values)
print(emb.shape, 1_000_000)
