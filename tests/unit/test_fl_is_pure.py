"""The FL core must stay importable without Django or any other web or queue framework."""

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ["django", "rest_framework", "celery", "channels", "safetensors", "scipy"]

SCRIPT = """
import importlib, json, pkgutil, sys
import aggregation.fl as fl
names = sorted(m.name for m in pkgutil.iter_modules(fl.__path__, "aggregation.fl."))
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_importing_every_fl_module_loads_no_framework():
    # Execute
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)

    # Assert: the discovery really found the modules, and none of them pulled in a framework
    expected = {"aggregate", "data", "fedavg", "model", "registry", "serde", "strategy"}
    assert expected <= {name.rsplit(".", 1)[1] for name in report["modules"]}
    assert [name for name in FORBIDDEN if name in report["loaded"]] == []
