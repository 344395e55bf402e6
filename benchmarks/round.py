"""Round speed: a real server (runserver --noreload, embedded mode) and N real `runnode` processes training
1 epoch on a P-parameter MLP for R rounds; steady-state seconds per round next to the time to move the same
bytes (N downloads + N uploads of P float32) over raw loopback TCP, measured in the same run.

Targets: round time / transfer time <= 5 at N=10, P=1e6; the N=100 case completes every round; N=100 idle
long-polling nodes cost the server (and the nodes) a few percent of one core.
Run: .venv/bin/python benchmarks/round.py [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.fl.model import MLPSpec  # noqa: E402
from aggregation.fl.serde import params_dumps  # noqa: E402
from benchmarks import _harness as h  # noqa: E402

IDLE_SECONDS = 10.0
OPENED = re.compile(r"\] round (\d+) open on model")
ACCEPTED_1 = re.compile(r"\] round 1: update from node (\d+) accepted")


@dataclass
class Case:
    nodes: int
    layers: tuple[int, ...]
    rounds: int
    idle: bool = False  # hold round 1 open (one extra, scripted node) and measure idle CPU meanwhile
    result: dict = field(default_factory=dict)

    @property
    def params(self) -> int:
        return MLPSpec(self.layers).num_params()

    @property
    def name(self) -> str:
        return f"N={self.nodes}, P={self.params:.0e}"


def scripted_node(url: str, spec: MLPSpec, release: threading.Event, stop: threading.Event) -> None:
    """The extra node of an idle case: holds round 1 until `release`, then uploads zeros at once every round."""
    session = h.node_session(url, "bench")
    body = params_dumps(spec, [np.zeros(s, np.float32) for s in spec.shapes()], {"num_examples": "1"})
    release.wait()
    number = 1
    while not stop.is_set():
        h.upload(session, url, number, body)
        state = session.get(f"{url}/api/rounds/current", params={"wait": 25, "known": number}, timeout=60).json()
        if state["run"]["status"] == "finished":
            return
        number = state["number"]


def idle_cpu(server: h.Proc, nodes: list[h.Proc], seconds: float) -> tuple[float, float]:
    """% of one core used by the server and by all nodes together over `seconds`."""
    procs = [server, *nodes]
    before = [h.cpu_seconds(p.pid) for p in procs]
    start = time.monotonic()
    time.sleep(seconds)
    after = [h.cpu_seconds(p.pid) for p in procs]
    elapsed = time.monotonic() - start
    used = [b - a for a, b in zip(before, after)]
    return 100 * used[0] / elapsed, 100 * sum(used[1:]) / elapsed


def poll_cost(url: str, server: h.Proc, calls: int = 40) -> tuple[float, float]:
    """Wall and server-CPU ms of one GET /api/rounds/current that does not wait: the work a waiting long-poll
    repeats every time it wakes (each commit in the server wakes all of them, and each one every second)."""
    with requests.Session() as session:
        cpu, start = h.cpu_seconds(server.pid), time.perf_counter()
        for _ in range(calls):
            session.get(f"{url}/api/rounds/current", timeout=60).raise_for_status()
        return 1000 * (time.perf_counter() - start) / calls, 1000 * (h.cpu_seconds(server.pid) - cpu) / calls


def run_case(case: Case, keep: bool) -> None:
    n, r = case.nodes, case.result
    spec = MLPSpec(case.layers)
    total = n + 1 if case.idle else n
    with h.Fleet(keep=keep) as fleet:
        url, server = fleet.start_server(
            TOTAL_NODES=str(total), FL_MIN_NODES=str(total), FL_MODEL_LAYERS=",".join(map(str, case.layers)),
            FL_EPOCHS="1", FL_MAX_ROUNDS=str(case.rounds), FL_ROUND_TIMEOUT_S="3600",
        )
        started = time.monotonic()
        nodes = [fleet.start_node(str(i), url) for i in range(1, n + 1)]
        release, stop = threading.Event(), threading.Event()
        helper = None
        if case.idle:
            helper = threading.Thread(target=scripted_node, args=(url, spec, release, stop), daemon=True)
            helper.start()
        peak_node_mb = 0.0

        def progress() -> dict:
            """Read from the server's log, not its API: a poll of /api/rounds/current would add the very load
            (loading the model blobs) this benchmark measures."""
            nonlocal peak_node_mb
            for p in nodes:
                if p.alive():
                    try:
                        peak_node_mb = max(peak_node_mb, h.status_mb(p.pid, "VmHWM"))
                    except (OSError, KeyError):
                        pass
            if not server.alive():
                raise RuntimeError(f"the server died:\n{server.output()[-3000:]}")
            log = server.output()
            state = {"round": max(map(int, OPENED.findall(log)), default=0),
                     "received_1": len(set(ACCEPTED_1.findall(log))), "finished": "run finished" in log}
            # Server CPU from (about) the start of round 2 to the end of the run: the steady rounds.
            if state["round"] >= 2 and "cpu_from" not in r:
                r["cpu_from"] = (time.monotonic(), h.cpu_seconds(server.pid))
            if state["finished"] and "cpu_to" not in r:
                r["cpu_to"] = (time.monotonic(), h.cpu_seconds(server.pid))
            return state

        try:
            if case.idle:
                h.wait_until(lambda: progress()["received_1"] >= n, 900, f"{n} nodes to upload round 1",
                             interval=0.5)
                r["startup_s"] = time.monotonic() - started
                r["alive_nodes"] = sum(p.alive() for p in nodes)
                time.sleep(2)  # every node is back in its long-poll
                r["idle_server_pct"], r["idle_nodes_pct"] = idle_cpu(server, nodes, IDLE_SECONDS)
                r["node_rss_mb"] = statistics.mean(h.status_mb(p.pid, "VmRSS") for p in nodes if p.alive())
                release.set()
            h.wait_until(lambda: progress()["finished"], 1200, "the run to finish", interval=0.5)
        except TimeoutError as exc:
            r["error"] = str(exc)
        finally:
            stop.set()
            release.set()
        r["wall_s"] = time.monotonic() - started
        history = h.rounds(url)
        r["server_hwm_mb"] = h.status_mb(server.pid, "VmHWM")
        r["node_hwm_mb"] = peak_node_mb
        # Nodes exit by themselves once the run is finished; give them a moment to say so.
        try:
            h.wait_until(lambda: not any(p.alive() for p in nodes), 60, "the nodes to exit", interval=0.5)
        except TimeoutError:
            pass
        r["nodes_finished"] = sum(1 for p in nodes if not p.alive() and "run finished" in p.output())
        r["poll_ms"], r["poll_cpu_ms"] = poll_cost(url, server)
    closed = [x for x in history if x["status"] == "closed"]
    r["closed"] = len(closed)
    r["failed"] = sum(1 for x in history if x["status"] == "failed")
    r["durations"] = [x["duration_s"] for x in closed]
    steady = [x["duration_s"] for x in closed if x["number"] > 1]
    r["steady_s"] = statistics.mean(steady) if steady else float("nan")
    r["aggregation_s"] = statistics.mean(x["metrics"].get("aggregation_seconds", 0) for x in closed) if closed else 0


def report(case: Case, transfer_s: float) -> None:
    r = case.result
    print(f"\n{case.name} ({'x'.join(map(str, case.layers))} MLP, {case.params} float32 = "
          f"{case.params * 4 / 1e6:.1f} MB), {case.rounds} rounds, FL_EPOCHS=1")
    if "error" in r:
        print(f"  DID NOT FINISH: {r['error']}")
    print(f"  rounds closed {r['closed']}/{case.rounds}, failed {r['failed']}; nodes that logged 'run finished' "
          f"{r['nodes_finished']}/{case.nodes}; wall {r['wall_s']:.1f} s")
    print("  seconds per round: " + ", ".join(f"{d:.2f}" for d in r["durations"])
          + f"  (mean aggregation {r['aggregation_s']:.3f} s)")
    print(f"  steady state (rounds 2..): {r['steady_s']:.3f} s; loopback transfer of the same bytes "
          f"{transfer_s:.3f} s; ratio {r['steady_s'] / transfer_s:.1f}")
    if "cpu_from" in r and "cpu_to" in r:
        wall, cpu = (b - a for a, b in zip(r["cpu_from"], r["cpu_to"]))
        print(f"  server CPU over rounds 2..{case.rounds} (seen in its log every 0.5 s): {cpu:.1f} s in {wall:.1f} s"
              f" = {100 * cpu / wall:.0f}% of one core")
    print(f"  one GET /api/rounds/current after the run (what a waiting long-poll redoes at each wake-up): "
          f"{r['poll_ms']:.1f} ms, server CPU {r['poll_cpu_ms']:.1f} ms")
    print(f"  peak RSS: server {r['server_hwm_mb']:.0f} MB, largest node {r['node_hwm_mb']:.0f} MB")
    if case.idle:
        print(f"  start-up: {r.get('startup_s', float('nan')):.1f} s until all {case.nodes} nodes uploaded round 1 "
              f"({r.get('alive_nodes', 0)} alive), mean node RSS {r.get('node_rss_mb', float('nan')):.0f} MB")
        print(f"  idle ({IDLE_SECONDS:.0f} s, {case.nodes} nodes long-polling): server "
              f"{r.get('idle_server_pct', float('nan')):.1f}% of one core, all nodes together "
              f"{r.get('idle_nodes_pct', float('nan')):.1f}% ({r.get('idle_nodes_pct', 0) / case.nodes:.2f}% each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip N=10, P=1e7")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directories in /tmp")
    args = parser.parse_args()
    cases = [Case(10, (1000, 999, 1), 5), Case(100, (10, 90, 1), 4, idle=True)]
    if not args.quick:
        cases.append(Case(10, (1000, 9990, 1), 3))
    rows = []
    for case in cases:
        print(f"running {case.name} ...", flush=True)
        try:
            run_case(case, args.keep)
        except (RuntimeError, requests.RequestException) as exc:
            print(f"  {case.name} failed: {exc}")
            continue
        # The baseline right after the case, so both see the machine in the same state.
        transfer_s = h.loopback_transfer_seconds([(case.params * 4, case.params * 4)] * case.nodes)
        report(case, transfer_s)
        rows.append((case, transfer_s))
    print(f"\n{'case':<16} {'rounds':>7} {'s/round':>8} {'transfer s':>11} {'ratio':>6}  target")
    for case, transfer_s in rows:
        r = case.result
        target = "<= 5" if (case.nodes, case.params) == (10, 1000999) else ""
        if case.nodes == 100:
            target = "all rounds: " + ("yes" if r["closed"] == case.rounds and "error" not in r else "NO")
        print(f"{case.name:<16} {r['closed']:>3}/{case.rounds:<3} {r['steady_s']:>8.3f} {transfer_s:>11.4f} "
              f"{r['steady_s'] / transfer_s:>6.1f}  {target}")


if __name__ == "__main__":
    main()
