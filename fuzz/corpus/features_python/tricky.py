#!/usr/bin/env python3
from __future__ import annotations
import numpy as np, pandas as pd
from scanpy import pp as p
import importlib; m = importlib.import_module("torch")
s = f"{x!r:>{w}} {{}}" + rb'\d+' + """multi
line""" + '''a'''
n = 1_000_000 + 0x_ff + 1e6j + 0o17 + 0b1010 + .5e-3
df = pd.read_csv("x.csv", n_jobs=-1)  # comment
lam = lambda a: [i for i in range(a) if i % 2]
while True:
    break
def f(*a, **k): return m.cuda.is_available() or "cuda:0"
@dec
class C: pass
x = p.neighbors(df); y = np.load("a.npy")
