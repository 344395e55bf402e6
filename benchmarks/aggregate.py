"""Aggregation speed: FedAvg, FedMedian and Krum over K updates of P float32 values, through the
project's own strategy code, next to numpy's memcpy bandwidth measured in the same run.

Figure of merit: bytes of updates read per second / memcpy bandwidth (target >= 0.5 for FedAvg).
Run: .venv/bin/python benchmarks/aggregate.py [--quick]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl.registry import strategy_create  # noqa: E402
from aggregation.fl.strategy import FitRes  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def memcpy_bandwidth(nbytes: int) -> float:
    """Bytes per second numpy copies between two large arrays (read + write counted once, as read)."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = best_of(lambda: np.copyto(dst, src), 5)
    return nbytes / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip P=1e7")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    bandwidth = memcpy_bandwidth(400_000_000)
    print(f"numpy memcpy bandwidth: {bandwidth / 1e9:.2f} GB/s (400 MB arrays, best of 5)")
    print(f"{'strategy':<10} {'K':>4} {'P':>9} {'seconds':>9} {'GB/s read':>10} {'/ memcpy':>9}")
    sizes = [(10, 100_000), (100, 100_000), (10, 1_000_000), (100, 1_000_000)]
    if not args.quick:
        sizes += [(10, 10_000_000), (100, 10_000_000)]
    for k, p in sizes:
        results = [FitRes([rng.standard_normal(p, dtype=np.float32)], int(rng.integers(1, 100)), {})
                   for _ in range(k)]
        current = [np.zeros(p, dtype=np.float32)]
        for name in ("fedavg", "fedmedian", "krum"):
            if name != "fedavg" and k * p > 200_000_000:
                continue  # sort/pairwise-distance based: minutes at this size on 2 cores
            strategy = strategy_create(name, {})
            seconds = best_of(lambda s=strategy, c=current, r=results: s.aggregate_fit(1, c, r, []),
                              3 if k * p < 1e8 else 1)
            rate = k * p * 4 / seconds
            print(f"{name:<10} {k:>4} {p:>9.0e} {seconds:>9.4f} {rate / 1e9:>10.2f} {rate / bandwidth:>9.2f}")
        del results


if __name__ == "__main__":
    main()
