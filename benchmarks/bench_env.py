"""Imported first by the benchmarks that fit many models: one BLAS/OpenMP thread unless told
otherwise (set before numpy and torch load: on a small shared machine two spinning BLAS threads made
a ridge CV 10-70x slower whenever another process ran), and the repository on sys.path."""

import os
import sys
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
