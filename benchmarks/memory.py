"""Memory: the server's peak RSS while FedAvg aggregates N=100 vs N=10 updates of P=1e6 float32 (uploaded over
HTTP; the last upload triggers the eager aggregation of the embedded mode), and a runnode process's RSS idle
and while training the prototype's model.

Targets: aggregation's extra memory (peak minus RSS before the last upload) at N=100 within 1.5x of N=10;
node RSS <= 120 MB. Peak = VmHWM of the server process (runserver --noreload is one process), reset before
the last upload through /proc/<pid>/clear_refs.
Run: .venv/bin/python benchmarks/memory.py [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl.model import MLPSpec  # noqa: E402
from aggregation.fl.serde import params_dumps  # noqa: E402
from benchmarks import _harness as h  # noqa: E402

LAYERS = (1000, 999, 1)  # P = 1,000,999


def aggregation_memory(n: int, keep: bool) -> dict:
    spec = MLPSpec(LAYERS)
    with h.Fleet(keep=keep) as fleet:
        url, server = fleet.start_server(TOTAL_NODES=str(n), FL_MIN_NODES=str(n), FL_ROUND_TIMEOUT_S="3600",
                                         FL_MODEL_LAYERS=",".join(map(str, LAYERS)))
        start_rss = h.status_mb(server.pid, "VmRSS")
        with ThreadPoolExecutor(8) as pool:
            sessions = list(pool.map(lambda i: h.node_session(url, f"mem-{i}"), range(n)))

        def send(i: int) -> int:
            rng = np.random.default_rng(i)  # one generator per thread: Generator is not thread-safe
            params = [rng.standard_normal(s, dtype=np.float32) * 0.01 for s in spec.shapes()]
            return h.upload(sessions[i], url, 1, params_dumps(spec, params, {"num_examples": str(10 + i)})).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(send, range(n - 1)))
        time.sleep(1.0)
        before_hwm = h.status_mb(server.pid, "VmHWM")
        before = h.status_mb(server.pid, "VmRSS")
        reset = h.peak_reset(server.pid)
        started = time.perf_counter()
        statuses.append(send(n - 1))  # answered after the eager aggregation has run in this request
        seconds = time.perf_counter() - started
        peak = h.status_mb(server.pid, "VmHWM")
        after = h.status_mb(server.pid, "VmRSS")
        closed = h.rounds(url)[0]
        for session in sessions:
            session.close()
    return {"n": n, "start": start_rss, "before": before, "before_hwm": before_hwm, "peak": peak, "after": after,
            "reset": reset, "accepted": statuses.count(201), "status": closed["status"],
            "agg_s": closed["metrics"].get("aggregation_seconds", float("nan")), "last_upload_s": seconds}


def node_memory(rounds: int, keep: bool) -> dict:
    """One runnode with the prototype's model; this script is the round's second node, so the real node
    idles (long-polls) until we upload, then trains the next round."""
    spec = MLPSpec()
    body = params_dumps(spec, [np.zeros(s, np.float32) for s in spec.shapes()], {"num_examples": "1"})
    with h.Fleet(keep=keep) as fleet:
        url, _server = fleet.start_server(TOTAL_NODES="2", FL_MIN_NODES="2", FL_ROUND_TIMEOUT_S="3600")
        node = fleet.start_node("1", url)
        bench = h.node_session(url, "bench")
        h.wait_until(lambda: h.current_round(url)["progress"]["received"] >= 1, 120, "the node's first upload")
        time.sleep(2.0)  # back in its long-poll
        idle = h.status_mb(node.pid, "VmRSS")
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                samples.append(h.status_mb(node.pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for number in range(1, rounds + 1):
            h.upload(bench, url, number, body)
            h.wait_until(lambda n=number: (s := h.current_round(url))["number"] > n and s["progress"]["received"] >= 1,
                         60, f"the node to train round {number + 1}", interval=0.05)
        done.set()
        sampler.join()
        return {"idle": idle, "during": max(samples), "hwm": h.status_mb(node.pid, "VmHWM"), "rounds": rounds,
                "after": h.status_mb(node.pid, "VmRSS")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train the node for 3 rounds instead of 10")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directories in /tmp")
    args = parser.parse_args()
    mb = MLPSpec(LAYERS).num_params() * 4 / 1e6
    print(f"FedAvg over N updates of P={MLPSpec(LAYERS).num_params()} float32 ({mb:.1f} MB each), server RSS in MB")
    print(f"{'N':>4} {'start':>6} {'before last':>11} {'peak':>6} {'extra':>6} {'N*P*4':>6} {'round':>7} "
          f"{'agg s':>6} {'last upload s':>13}")
    extras = {}
    for n in (10, 100):
        r = aggregation_memory(n, args.keep)
        extras[n] = r["peak"] - r["before"]
        print(f"{n:>4} {r['start']:>6.0f} {r['before']:>11.0f} {r['peak']:>6.0f} {extras[n]:>6.0f} {n * mb:>6.0f} "
              f"{r['status']:>7} {r['agg_s']:>6.2f} {r['last_upload_s']:>13.2f}"
              + ("" if r["reset"] else "  (peak not reset: VmHWM since start)")
              + ("" if r["accepted"] == n else f"  only {r['accepted']} of {n} uploads accepted"))
    print(f"extra memory N=100 / N=10: {extras[100] / extras[10]:.2f} (target <= 1.5)")
    node = node_memory(3 if args.quick else 10, args.keep)
    print(f"\nrunnode, prototype model (10-64-1, 769 parameters): idle {node['idle']:.0f} MB, "
          f"max sampled while training {node['rounds']} rounds {node['during']:.0f} MB, peak (VmHWM) "
          f"{node['hwm']:.0f} MB (target <= 120)")


if __name__ == "__main__":
    main()
