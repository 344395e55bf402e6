"""Every strategy on the demo task, clean and with one attacker: prints final pooled loss against version 0.

Run: .venv/bin/python benchmarks/strategies.py [--rounds 20] [--nodes 5]

In-process, through the same fl code the server and nodes use: each round the strategy is built
fresh from the registry and reloads the previous round's state_dict, as the server does, and every
node trains with model.train on its own synthetic_regression data (seeded by its node number),
with the round config from configure_fit. The attacked variant replaces the last node's update
by current − 10·(its honest delta).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl import NDArrays  # noqa: E402
from aggregation.fl.data import synthetic_regression  # noqa: E402
from aggregation.fl.model import MLPSpec, loss, train  # noqa: E402
from aggregation.fl.registry import STRATEGIES, strategy_create  # noqa: E402
from aggregation.fl.strategy import FitRes  # noqa: E402

SPEC = MLPSpec()
EPOCHS, LEARNING_RATE, SAMPLES, MODEL_SEED = 10, 0.01, 100, 0


def variants(nodes: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registry name, hyperparameters): the defaults, with f set as high as each rule allows."""
    f_krum = max((nodes - 3) // 2, 0)
    f_bulyan = max((nodes - 3) // 4, 0)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for name in STRATEGIES:
        params: dict[str, Any] = {}
        if name in ("krum", "multikrum"):
            params = {"num_malicious": min(f_krum, 1)}
        elif name == "bulyan":
            params = {"num_malicious": min(f_bulyan, 1)}
        label = name + (f" f={params['num_malicious']}" if "num_malicious" in params else "")
        rows.append((label, name, params))
    dp_fixed = {"mode": "fixed", "noise_multiplier": 0.1, "clip_norm": 0.5, "seed": 7}
    dp_adaptive = {"mode": "adaptive", "noise_multiplier": 0.1, "clip_norm": 0.5, "seed": 7}
    rows.append(("fedavg + dp fixed z=0.1 C=0.5", "fedavg", {"dp": dp_fixed}))
    rows.append(("fedavg + dp adaptive z=0.1 C0=0.5", "fedavg", {"dp": dp_adaptive}))
    return rows


def run(name: str, params: dict[str, Any], data: list[tuple[np.ndarray, np.ndarray]], rounds: int,
        attacked: bool) -> tuple[NDArrays, NDArrays, int | None]:
    """Returns (version 0, final model, the round it became non-finite or None)."""
    initial = strategy_create(name, params).initialize_parameters(SPEC, MODEL_SEED)
    assert initial is not None
    current, state = initial, {}
    for server_round in range(1, rounds + 1):
        strategy = strategy_create(name, params)
        strategy.load_state(state)
        config = strategy.configure_fit(server_round)
        results = []
        for node, (x, y) in enumerate(data, start=1):
            new, node_loss = train(
                SPEC, current, x, y, epochs=EPOCHS, learning_rate=float(config.get("learning_rate", LEARNING_RATE)),
                seed=node + server_round, proximal_mu=float(config.get("proximal_mu", 0.0)), global_params=current,
            )
            if attacked and node == len(data):
                new = [(c - 10.0 * (p - c)).astype(np.float32) for p, c in zip(new, current)]
            results.append(FitRes(new, len(x), {"loss": node_loss}))
        aggregated, _ = strategy.aggregate_fit(server_round, current, results, [])
        current = current if aggregated is None else aggregated
        state = strategy.state_dict()
        if not all(np.isfinite(layer).all() for layer in current):
            return initial, current, server_round
    return initial, current, None


def describe(value: float, baseline: float, diverged: int | None) -> tuple[str, str]:
    if diverged is not None:
        return f"diverged r{diverged}", "-"
    return f"{value:.5g}", f"{value / baseline:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    args = parser.parse_args()
    data = [synthetic_regression(node, n=SAMPLES, features=SPEC.layers[0]) for node in range(1, args.nodes + 1)]
    pooled_x = np.concatenate([x for x, _ in data])
    pooled_y = np.concatenate([y for _, y in data])
    started = time.perf_counter()
    print(f"demo task: {args.nodes} nodes x {SAMPLES} samples, model {SPEC.layers}, {EPOCHS} local epochs at "
          f"lr {LEARNING_RATE}, {args.rounds} rounds; attacked = node {args.nodes} sends current - 10 x its delta")
    baseline = None
    header = f"{'strategy':<34} {'clean loss':>11} {'ratio':>7} {'attacked loss':>14} {'ratio':>9}"
    lines = []
    for label, name, params in variants(args.nodes):
        with np.errstate(all="ignore"):  # a diverging run overflows on purpose; it is reported, not warned about
            initial, clean, clean_diverged = run(name, params, data, args.rounds, attacked=False)
            _, attacked, attacked_diverged = run(name, params, data, args.rounds, attacked=True)
            if baseline is None:
                baseline = loss(SPEC, initial, pooled_x, pooled_y)
            clean_text = describe(loss(SPEC, clean, pooled_x, pooled_y), baseline, clean_diverged)
            attacked_text = describe(loss(SPEC, attacked, pooled_x, pooled_y), baseline, attacked_diverged)
        lines.append(f"{label:<34} {clean_text[0]:>11} {clean_text[1]:>7} {attacked_text[0]:>14} {attacked_text[1]:>9}")
    print(f"version 0 (seed {MODEL_SEED}) pooled loss: {baseline:.5f}; ratio = final / version 0")
    print(header)
    print("\n".join(lines))
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
