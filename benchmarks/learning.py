"""Learning quality of `simulate` under label skew, and the protocol's price per round against a pure-numpy loop.

Run: .venv/bin/python benchmarks/learning.py [--rounds 100] [--seeds 3] [--partitions iid,dirichlet:0.5,...]
     [--strategies fedavg,fedadam] [--epochs 1,5] [--scaling global|node|range]

Every run is `manage.py simulate` in this process (aggregation.simulation.Simulation, a throw-away SQLite
database, eager Celery): the nodes' data pipeline, nodes_app.training, update_submit, the strategy and the
server's evaluation on the 20% of digits no node holds. The reference settings: 10 nodes, MLP 64-64-10,
batch 10, lr 0.05, `--val-fraction 0`, 100 rounds, FedAvg and FedAdam (η 0.1), E ∈ {1, 5}, seeds 0, 1, 2.
Printed per setting (means over seeds): the first round at 95% and 97% test accuracy (per seed; "-" never),
the accuracy after rounds 20, 50 and 100, and the mean of the last 10 rounds.

Then the price of the protocol: simulate's seconds per round next to a pure-numpy loop (its own MLP, the same
nodes' arrays, minibatch SGD, a weighted mean and the test score; no fedsite code), both measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGY_PARAMS = {"fedavg": {}, "fedadam": {"eta": 0.1}}
HIDDEN = (64,)
LEARNING_RATE = 0.05
BATCH = 10
MARKS = (20, 50, 100)


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


def config(partition: str, strategy: str, epochs: int, seed: int, rounds: int, nodes: int, scaling: str | None):
    from aggregation.simulation import SimulationConfig

    options = dict(nodes=nodes, rounds=rounds, data="digits", partition=partition, seed=seed, strategy=strategy,
                   strategy_params=STRATEGY_PARAMS.get(strategy, {}), hidden=HIDDEN, epochs=epochs,
                   learning_rate=LEARNING_RATE, batch_size=BATCH, val_fraction=0.0,
                   name=f"learning-{partition.replace(':', '')}-{strategy}-e{epochs}-s{seed}-{time.monotonic_ns()}")
    if scaling is not None:
        fields = {f.name for f in dataclasses.fields(SimulationConfig)}
        if "scaling" not in fields:
            raise SystemExit("--scaling: this checkout's simulate has no feature scaling option")
        options["scaling"] = scaling
    return SimulationConfig(**options)


def simulate(cfg) -> tuple[list[float], float, object]:
    """(test accuracy after each round, seconds per round, the Simulation) of one run."""
    from aggregation.simulation import Simulation

    sim = Simulation(cfg)
    sim.setup()
    curve, started = [], time.perf_counter()
    try:
        while not sim.finished:
            rnd = sim.step()
            if rnd.status != "closed":
                raise RuntimeError(f"round {rnd.number} is {rnd.status}")
            curve.append(float(rnd.metrics["test_accuracy"]))
    finally:
        sim.close()
    return curve, (time.perf_counter() - started) / len(curve), sim


# --- the pure-numpy reference loop ---------------------------------------------------------------------
def _grads(ws: list[np.ndarray], x: np.ndarray, onehot: np.ndarray) -> list[np.ndarray]:
    acts = [x]
    for i in range(0, len(ws), 2):
        z = acts[-1] @ ws[i] + ws[i + 1]
        acts.append(np.maximum(z, 0) if i < len(ws) - 2 else z)
    z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
    p = np.exp(z)
    delta = (p / p.sum(axis=1, keepdims=True) - onehot) / x.shape[0]
    out: list[np.ndarray] = [np.empty(0)] * len(ws)
    for i in reversed(range(len(ws) // 2)):
        out[2 * i], out[2 * i + 1] = acts[i].T @ delta, delta.sum(axis=0)
        if i:
            delta = (delta @ ws[2 * i].T) * (acts[i] > 0)
    return out


def numpy_loop(nodes: list[tuple[np.ndarray, np.ndarray]], test: tuple[np.ndarray, np.ndarray], epochs: int,
               rounds: int, seed: int) -> tuple[float, float]:
    """(seconds per round, final test accuracy) of FedAvg written directly in numpy."""
    rng = np.random.default_rng(seed)
    sizes = (nodes[0][0].shape[1], *HIDDEN, 10)
    ws: list[np.ndarray] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        ws += [rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, np.float32)]
    hot = [np.eye(10, dtype=np.float32)[y.astype(int)] for _, y in nodes]
    total = sum(len(y) for _, y in nodes)
    lr = np.float32(LEARNING_RATE)
    started = time.perf_counter()
    for _ in range(rounds):
        mean = [np.zeros_like(w) for w in ws]
        for (x, y), t in zip(nodes, hot):
            local = [w.copy() for w in ws]
            for _ in range(epochs):
                order = rng.permutation(len(y))
                for start in range(0, len(y), BATCH):
                    idx = order[start:start + BATCH]
                    for w, g in zip(local, _grads(local, x[idx], t[idx])):
                        w -= lr * g
            for m, w in zip(mean, local):
                m += w * (len(y) / total)
        ws = mean
        xt = test[0]
        for i in range(0, len(ws), 2):
            xt = xt @ ws[i] + ws[i + 1]
            xt = np.maximum(xt, 0) if i < len(ws) - 2 else xt
        accuracy = float((xt.argmax(axis=1) == test[1]).mean())
    return (time.perf_counter() - started) / rounds, accuracy


def numpy_loop_best(nodes, test, epochs: int, rounds: int) -> tuple[float, float]:
    """numpy_loop with one BLAS thread when threadpoolctl is there (faster for these tiny products), else as is."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return numpy_loop(nodes, test, epochs, rounds, 0)
    with threadpool_limits(limits=1, user_api="blas"):
        return numpy_loop(nodes, test, epochs, rounds, 0)


def startup_seconds(data_dir: str, runs: int = 3) -> float:
    """Median wall time of a whole `manage.py simulate --nodes 1 --rounds 1` process (start-up dominates)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FL_", "DATABASE_", "REDIS_"))}
    env.update(SECRET_KEY="benchmark-only", FL_DATA_DIR=data_dir, PYTHONPATH=str(ROOT))
    times = []
    for run in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "manage.py", "simulate", "--nodes", "1", "--rounds", "1", "--data", "digits",
                        "--name", f"startup-{run}-{time.monotonic_ns()}"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def first(curve: list[float], target: float) -> str:
    return next((str(i) for i, acc in enumerate(curve, start=1) if acc >= target), "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--partitions", default="iid,dirichlet:0.5,dirichlet:0.1,shards:2")
    parser.add_argument("--strategies", default="fedavg,fedadam")
    parser.add_argument("--epochs", default="1,5")
    parser.add_argument("--scaling", default=None, help="global | node | range (default: simulate's default)")
    parser.add_argument("--timing-rounds", type=int, default=20, help="rounds of each timing run (default 20)")
    parser.add_argument("--timing-only", action="store_true", help="only the price of the protocol and start-up")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    epochs = [int(e) for e in args.epochs.split(",")]
    with tempfile.TemporaryDirectory(prefix="fedsite-learning-") as data_dir:
        started = time.perf_counter()
        django_setup(data_dir)
        print(f"Django set up and migrated in {time.perf_counter() - started:.2f} s")
        print(f"digits, {args.nodes} nodes, MLP [64, {', '.join(map(str, HIDDEN))}, 10], batch {BATCH}, "
              f"lr {LEARNING_RATE}, val fraction 0, {args.rounds} rounds, seeds {seeds}, "
              f"fedadam {STRATEGY_PARAMS['fedadam']}, scaling {args.scaling or 'default'}; "
              "test set: the server's held-out 20% of digits")
        marks = [m for m in MARKS if m <= args.rounds]
        print(f"{'partition':<14} {'strategy':<8} {'E':>2}  {'to 95% (seeds)':<15} {'to 97% (seeds)':<15} "
              + " ".join(f"{'@' + str(m):>7}" for m in marks) + f" {'last10':>7} {'s/round':>8}", flush=True)
        for partition in [] if args.timing_only else args.partitions.split(","):
            for strategy in args.strategies.split(","):
                for e in epochs:
                    runs = [simulate(config(partition, strategy, e, s, args.rounds, args.nodes, args.scaling))
                            for s in seeds]
                    curves = [c for c, _, _ in runs]
                    at = " ".join(f"{statistics.mean(c[m - 1] for c in curves):>7.4f}" for m in marks)
                    last10 = statistics.mean(statistics.mean(c[-10:]) for c in curves)
                    print(f"{partition:<14} {strategy:<8} {e:>2}  {','.join(first(c, .95) for c in curves):<15} "
                          f"{','.join(first(c, .97) for c in curves):<15} {at} {last10:>7.4f} "
                          f"{statistics.mean(t for _, t, _ in runs):>8.3f}", flush=True)
        print("\nprice of the protocol: iid, fedavg, seed 0, "
              f"{args.timing_rounds} rounds each, simulate's own seconds per round vs a pure-numpy loop")
        from aggregation.datasets import server_testset_load

        for e in epochs:
            _, per_round, sim = simulate(config("iid", "fedavg", e, 0, args.timing_rounds, args.nodes, args.scaling))
            arrays = [(d.x_train, d.y_train) for d in sim.data]
            test = server_testset_load("digits")
            # The test rows as the server scores them: with the nodes' combined scaling (a checkout without
            # federated statistics standardised the test set with its own).
            scaling = getattr(sim, "scaling", None)
            x_test = scaling.apply(test.x) if scaling is not None else test.x
            numpy_s, numpy_acc = numpy_loop_best(arrays, (x_test, test.y), e, args.timing_rounds)
            print(f"E={e}: simulate {per_round:.4f} s/round, pure numpy {numpy_s:.4f} s/round "
                  f"(final accuracy {numpy_acc:.4f}); ratio {per_round / numpy_s:.2f}x", flush=True)
        print(f"start-up: a whole `simulate --nodes 1 --rounds 1 --data digits` process takes "
              f"{startup_seconds(data_dir):.2f} s (median of 3)")


if __name__ == "__main__":
    main()
