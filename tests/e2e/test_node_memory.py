"""A node process loads only what a node uses: no URLconf, views, Prometheus or scikit-learn of the server."""
import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ROOT, Proc, wait_until

# Runs `manage.py <args>` in this interpreter and writes the names in sys.modules to argv[1] at exit.
MODULES_AT_EXIT = (
    "import atexit, json, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "sys.argv[0] = 'manage.py'\n"
    "runpy.run_path('manage.py', run_name='__main__')\n"
)
# Loaded by the server's system checks (the URLconf imports every view), its metrics collector, --data,
# or its web server (uvicorn and its parts; daphne, the one before it, brought Twisted and autobahn).
SERVER_ONLY = ["fedsite.urls", "aggregation.views", "aggregation.metrics", "prometheus_client", "sklearn",
               "fedsite.webserver", "fedsite.httpprotocol", "uvicorn", "uvloop", "httptools", "daphne", "twisted",
               "autobahn"]


def test_a_node_that_trains_a_round_loads_none_of_the_servers_modules(start_server, e2e_env, tmp_path):
    url, server = start_server(TOTAL_NODES="1", FL_MIN_NODES="1", FL_MAX_ROUNDS="1")
    out = tmp_path / "node-modules.json"
    env = {**e2e_env, "FL_NODE_STATE_DIR": str(tmp_path / "node-1")}
    node = Proc("node-1", [sys.executable, "-c", MODULES_AT_EXIT, str(out), "runnode", "--id", "1", "--server", url,
                           "--port", "0"], env, tmp_path)
    try:
        wait_until(lambda: node.popen.poll() is not None, 90, "the node to finish the run", [node, server])
    finally:
        node.stop()
    assert node.popen.returncode == 0, node.output()[-3000:]
    modules = json.loads(out.read_text())
    assert {"nodes_app.runner", "nodes_app.training", "numpy"} <= set(modules)  # the dump is the node's
    assert [m for m in modules if m.split(".")[0] in SERVER_ONLY or m in SERVER_ONLY] == []


def test_a_csv_data_set_loads_without_scikit_learn(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(20)))
    script = (
        "import json, sys\n"
        "from aggregation.datasets import node_data_load\n"
        f"data = node_data_load('csv:{path}', target='y', partitioning='iid', num_partitions=1, partition_id=0,"
        " seed=0, val_fraction=0.2)\n"
        "print(json.dumps([data.description, 'sklearn' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    description, sklearn_loaded = json.loads(done.stdout.splitlines()[-1])
    assert "data.csv" in description
    assert sklearn_loaded is False
