"""Ingest speed: concurrent safetensors uploads into one round that never fills, over the real HTTP API of a
real server (runserver --noreload, embedded mode); updates/s and MB/s accepted and persisted, next to raw
loopback TCP throughput measured in the same run.

Target: a single 40 MB update (P=1e7) is accepted and persisted at >= 0.3 of raw loopback MB/s.
Run: .venv/bin/python benchmarks/ingest.py [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl.model import MLPSpec  # noqa: E402
from aggregation.fl.serde import params_dumps  # noqa: E402
from benchmarks import _harness as h  # noqa: E402


def bodies(spec: MLPSpec, count: int, seed: int) -> list[bytes]:
    """`count` distinct updates: one random model, each with its own last bias."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(shape, dtype=np.float32) * 0.01 for shape in spec.shapes()]
    out = []
    for i in range(count):
        params[-1][0] = float(i)
        out.append(params_dumps(spec, params, {"num_examples": "100", "metrics": json.dumps({"loss": 1.0})}))
    return out


def ingest(layers: tuple[int, ...], uploads: int, threads: int, keep: bool) -> dict:
    """Upload `uploads` distinct updates with `threads` concurrent clients; what the server persisted."""
    spec = MLPSpec(layers)
    payloads = bodies(spec, uploads, seed=len(layers) + uploads)
    with h.Fleet(keep=keep) as fleet:
        url, server = fleet.start_server(
            TOTAL_NODES="100000", FL_MIN_NODES="100000", FL_ROUND_TIMEOUT_S="3600",
            FL_MODEL_LAYERS=",".join(map(str, layers)),
        )
        with ThreadPoolExecutor(max(threads, 8)) as pool:
            sessions = list(pool.map(lambda i: h.node_session(url, f"ingest-{i}"), range(uploads)))
        cpu_before = h.cpu_seconds(server.pid)
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            statuses = list(pool.map(lambda i: h.upload(sessions[i], url, 1, payloads[i]).status_code,
                                     range(uploads)))
        seconds = time.perf_counter() - start
        server_cpu = h.cpu_seconds(server.pid) - cpu_before
        detail = h.requests_get_json(f"{url}/api/rounds/1")
        download_s, model_bytes = min(_timed_download(url) for _ in range(3))
        for session in sessions:
            session.close()
    stored = detail["updates"]
    return {
        "P": spec.num_params(), "uploads": uploads, "threads": threads, "seconds": seconds,
        "accepted": statuses.count(201), "persisted": len(stored),
        "persisted_bytes": sum(u["size"] for u in stored), "body_bytes": sum(map(len, payloads)),
        "server_cpu_s": server_cpu, "download_s": download_s, "model_bytes": model_bytes,
    }


def _timed_download(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    answer = requests.get(f"{url}/api/models/0/download", timeout=600)
    answer.raise_for_status()
    return time.perf_counter() - start, len(answer.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer uploads per case")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directories in /tmp")
    args = parser.parse_args()
    scale = 2 if args.quick else 1
    cases = [
        ("concurrent, P=1e3", (10, 90, 1), 200 // scale, 16),
        ("concurrent, P=1e6", (1000, 999, 1), 40 // scale, 8),
        ("one at a time, P=1e7", (1000, 9990, 1), 4 // scale, 1),
    ]
    results = [(name, ingest(layers, n, t, args.keep)) for name, layers, n, t in cases]
    raw = h.loopback_upload_rate(40_000_000)
    print(f"raw loopback TCP: {raw / 1e6:.0f} MB/s (one connection sending 40 MB, best of 5, same run)")
    print(f"{'case':<22} {'uploads':>7} {'thr':>4} {'201':>4} {'stored':>6} {'seconds':>8} {'updates/s':>10} "
          f"{'MB/s':>8} {'/ raw':>6} {'srv CPU s/upd':>13}")
    for name, r in results:
        rate = r["persisted_bytes"] / r["seconds"]
        print(f"{name:<22} {r['uploads']:>7} {r['threads']:>4} {r['accepted']:>4} {r['persisted']:>6} "
              f"{r['seconds']:>8.2f} {r['persisted'] / r['seconds']:>10.1f} {rate / 1e6:>8.1f} {rate / raw:>6.3f} "
              f"{r['server_cpu_s'] / r['uploads']:>13.4f}")
    single = results[-1][1]
    per_update = single["seconds"] / single["uploads"]
    mb = single["body_bytes"] / single["uploads"] / 1e6
    print(f"\n40 MB update: {per_update:.2f} s each ({mb:.1f} MB body) = {mb / per_update:.1f} MB/s persisted; "
          f"raw loopback moves it in {mb * 1e6 / raw:.3f} s; ratio {mb * 1e6 / per_update / raw:.3f} (target >= 0.3)")
    rate = single["model_bytes"] / single["download_s"]
    print(f"download of the same model (GET /api/models/0/download, best of 3): {single['download_s']:.2f} s = "
          f"{rate / 1e6:.1f} MB/s; ratio to raw loopback {rate / raw:.3f}")
    lost = [name for name, r in results if r["persisted"] != r["uploads"] or r["accepted"] != r["uploads"]]
    if lost:
        print(f"NOT EVERY UPLOAD WAS ACCEPTED AND STORED: {', '.join(lost)}")


if __name__ == "__main__":
    main()
