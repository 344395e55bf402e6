"""Centralised training against FedAvg over 10 nodes on digits: rounds to 95% test accuracy and final accuracy.

Run: .venv/bin/python benchmarks/learning.py [--rounds 50] [--seeds 3] [--nodes 10] [--strategy fedavg]

In-process, with the code the server and nodes run: every node holds its partition from
aggregation.datasets (IID, Dirichlet(0.5), Dirichlet(0.1)), trains with nodes_app.training
(the function runnode and `simulate` call), and the strategy comes from the registry. The test set
is the server's: the 20% of digits no node holds (FL_SERVER_EVAL=digits). "Centralised" is the
same model trained on all the nodes' rows pooled in one place (one partition, standardised with
the pooled statistics); one of its rounds is the same local work as a node's round (E epochs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.datasets import nodes_data_load, server_testset_load  # noqa: E402
from aggregation.fl.metrics import accuracy  # noqa: E402
from aggregation.fl.model import MLPSpec  # noqa: E402
from aggregation.fl.registry import strategy_create  # noqa: E402
from aggregation.fl.strategy import FitRes  # noqa: E402
from nodes_app.training import fit_and_evaluate  # noqa: E402

SPEC = MLPSpec((64, 32, 10), "classification")
CONFIG = {"epochs": 5, "learning_rate": 0.1, "batch_size": 32}
TARGET = 0.95


def run(partitioning: str, nodes: int, rounds: int, seed: int, strategy: str) -> list[float]:
    """Test accuracy of the global model after each round."""
    data = nodes_data_load("digits", partitioning=partitioning, num_partitions=nodes, seed=seed)
    test = server_testset_load("digits")
    server = strategy_create(strategy, {})
    params = server.initialize_parameters(SPEC, seed)
    curve = []
    for number in range(1, rounds + 1):
        results = []
        for i, node in enumerate(data, start=1):
            new, metrics = fit_and_evaluate(SPEC, params, node, server.configure_fit(number) | CONFIG, i + number)
            results.append(FitRes(new, len(node.y_train), metrics))
        aggregated, _ = server.aggregate_fit(number, params, results, [])
        params = aggregated if aggregated is not None else params
        curve.append(accuracy(SPEC, params, test.x, test.y))
    return curve


def first_round(curve: list[float]) -> int | None:
    return next((i for i, acc in enumerate(curve, start=1) if acc >= TARGET), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--strategy", default="fedavg")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    pool = sum(len(n.y_train) + len(n.y_val) for n in nodes_data_load("digits", num_partitions=1))
    print(f"digits: {pool} rows shared by the nodes, {len(server_testset_load('digits'))} held-out test rows; "
          f"model {list(SPEC.layers)} softmax; per round {CONFIG['epochs']} local epochs, "
          f"lr {CONFIG['learning_rate']}, batch {CONFIG['batch_size']}; each node validates on 20% of its rows; "
          f"{args.rounds} rounds; seeds {seeds}")
    settings = [("centralised (pooled data)", "iid", 1)] + [
        (f"{args.strategy} {p}, {args.nodes} nodes", p, args.nodes) for p in ("iid", "dirichlet:0.5", "dirichlet:0.1")]
    print(f"{'setting':<30} {'rounds to 95% (per seed)':<26} {'median':>7}   {'final test accuracy':<20} {'best':>6}"
          f" {'seconds':>8}")
    for label, partitioning, nodes in settings:
        started = time.monotonic()
        curves = [run(partitioning, nodes, args.rounds, seed, args.strategy) for seed in seeds]
        hits = [first_round(c) for c in curves]
        reached = [h for h in hits if h is not None]
        median = f"{statistics.median(reached):g}" if len(reached) == len(hits) else "-"
        finals = [c[-1] for c in curves]
        spread = f"{np.mean(finals):.4f} ± {np.std(finals):.4f}"
        shown = ", ".join(str(h) if h is not None else "never" for h in hits)
        print(f"{label:<30} {shown:<26} {median:>7}   {spread:<20} {max(max(c) for c in curves):>6.4f}"
              f" {time.monotonic() - started:>8.1f}")


if __name__ == "__main__":
    main()
