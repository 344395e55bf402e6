"""Update compression on digits: bytes per parameter on the wire and the test-accuracy cost of fp16 and int8.

Run: .venv/bin/python benchmarks/compression.py [--rounds 30] [--seeds 3] [--nodes 10] [--partition dirichlet:0.5]

In-process through aggregation.simulation (what `manage.py simulate` runs): every virtual node trains with
nodes_app.training, encodes its upload with fl.compression.update_encode in the experiment's update_encoding,
and the server's parser decodes it (update_decode) against the round's model before the real services store,
validate and aggregate it. So the accuracy cost is the real one, and the bytes are the safetensors bodies a
node would send (header included). The test set is the server's: the 20% of digits no node holds. Every
encoding runs on the same partitions, initial models and node seeds, so "none" is a paired baseline.
A throw-away SQLite database in a temporary directory holds the runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENCODINGS = ("none", "fp16", "int8")
# Tensor data per parameter: float32, float16, int8 (plus one float32 scale per tensor, added below).
DATA_BYTES = {"none": 4.0, "fp16": 2.0, "int8": 1.0}


def django_setup(data_dir: str) -> None:
    """The embedded mode (SQLite, eager Celery) in `data_dir`, whatever the shell's FL_* variables say."""
    for key in [k for k in os.environ if k.startswith(("DJANGO_", "FL_", "DATABASE_", "REDIS_", "ETCD_"))]:
        del os.environ[key]
    os.environ.update({"DJANGO_SETTINGS_MODULE": "fedsite.settings", "SECRET_KEY": "benchmark-only",
                       "FL_DATA_DIR": data_dir})
    import django
    from django.core.management import call_command

    django.setup()
    for name in ("fedsite", "celery", "kombu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    call_command("migrate", verbosity=0)


def run(encoding: str, seed: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """(final test accuracy, mean upload bytes per parameter, of which tensor data) of one simulated federation."""
    from aggregation.simulation import Simulation, SimulationConfig

    sim = Simulation(SimulationConfig(nodes=args.nodes, rounds=args.rounds, data="digits", partition=args.partition,
                                      seed=seed, update_encoding=encoding, name=f"compression-{encoding}-{seed}"))
    sim.setup()
    try:
        while not sim.finished:
            rnd = sim.step()
            if rnd.status != "closed":
                raise RuntimeError(f"round {rnd.number} is {rnd.status}: {rnd.failure_reason}")
    finally:
        sim.close()
    if sim.uploads != args.nodes * args.rounds:
        raise RuntimeError(f"expected {args.nodes * args.rounds} uploads, counted {sim.uploads}")
    params, tensors = sim.spec.num_params(), len(sim.spec.names())
    data = DATA_BYTES[encoding] + (4 * tensors / params if encoding == "int8" else 0.0)
    return rnd.metrics["test_accuracy"], sim.uploaded_bytes / sim.uploads / params, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--partition", default="dirichlet:0.5", help="iid | dirichlet:ALPHA (default dirichlet:0.5)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="fedsite-compression-") as data_dir:
        django_setup(data_dir)
        from aggregation.simulation import SimulationConfig

        cfg = SimulationConfig()
        print(f"digits, {args.nodes} nodes, {args.partition}, {args.rounds} rounds, fedavg, model [64, "
              f"{', '.join(map(str, cfg.hidden))}, 10] softmax; {cfg.epochs} local epochs, lr {cfg.learning_rate}, "
              f"batch {cfg.batch_size}; seeds {seeds}; test set: the server's held-out 20% of digits")
        print("bytes/param: whole upload body (safetensors header with metadata and metrics included) / parameters")
        print(f"{'encoding':<9} {'bytes/param':>11} {'(data)':>7} {'vs none':>8}   "
              f"{'final test accuracy (per seed)':<32} {'mean':>7} {'Δ vs none':>10} {'seconds':>8}")
        baseline: dict[int, float] = {}
        none_bytes = 0.0
        for encoding in ENCODINGS:
            started = time.monotonic()
            results = [run(encoding, seed, args) for seed in seeds]
            accuracies = [acc for acc, _, _ in results]
            per_param = statistics.mean(b for _, b, _ in results)
            if encoding == "none":
                baseline, none_bytes = dict(zip(seeds, accuracies)), per_param
            delta = statistics.mean(acc - baseline[s] for s, acc in zip(seeds, accuracies))
            shown = ", ".join(f"{a:.4f}" for a in accuracies)
            print(f"{encoding:<9} {per_param:>11.3f} {results[0][2]:>7.3f} {per_param / none_bytes:>7.2f}x   "
                  f"{shown:<32} {statistics.mean(accuracies):>7.4f} {delta:>+10.4f} "
                  f"{time.monotonic() - started:>8.1f}")


if __name__ == "__main__":
    main()
