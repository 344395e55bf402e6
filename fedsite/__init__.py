"""fedsite: a federated learning coordination server built on Django."""
import os

# One BLAS thread per process unless the operator says otherwise (before numpy is first imported): a
# server's request threads and a machine full of node processes each spinning a BLAS thread pool
# oversubscribed the cores; measured on 2 cores, a 10-node round of a 1e6-parameter model took seconds
# longer with the pools than without.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
from .celery import app as celery_app  # noqa: E402  (after the BLAS defaults, which must precede numpy)

__all__ = ("celery_app",)
