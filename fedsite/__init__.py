"""fedsite: a federated learning coordination server built on Django."""
import os

# One BLAS thread per process unless the operator says otherwise (before numpy is first imported): a
# server's request threads and a machine full of node processes each spinning a BLAS thread pool
# oversubscribe the cores. Measured on 2 cores (benchmarks/round.py, N=10, P=1e6): 1.47 s per round
# with 2 BLAS threads per process, 1.09 s with 1.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
from .celery import app as celery_app  # noqa: E402  (after the BLAS defaults, which must precede numpy)

__all__ = ("celery_app",)
