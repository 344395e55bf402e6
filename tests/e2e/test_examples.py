"""The examples a new user starts from, run as a user would: createexperiment, then real
`runnode --client` processes; federated evaluation must show the model learning."""
import subprocess
import sys

import pytest
import requests

from tests.e2e.conftest import ROOT, Proc, wait_until

pytestmark = pytest.mark.e2e


def federated_accuracy(url: str, experiment: str, version: int) -> float:
    info = requests.get(f"{url}/api/models/{version}", params={"experiment": experiment}, timeout=5).json()
    return info["evaluation"]["accuracy"]


def run_federation(url, server, start_node, experiment, client, nodes=3, rounds=3):
    """Start `nodes` client nodes, wait for `rounds` rounds and every node's report of the final model."""
    procs = [start_node(str(i), url, "--client", client, "--experiment", experiment, NUM_NODES=str(nodes))
             for i in range(1, nodes + 1)]
    status = lambda: requests.get(f"{url}/status", params={"experiment": experiment}, timeout=5).json()  # noqa: E731
    wait_until(lambda: status()["run_status"] == "finished", 240, f"{rounds} rounds of {experiment}", [server, *procs])
    wait_until(lambda: all(p.popen.poll() is not None for p in procs), 60, "the nodes to exit", [server, *procs])
    assert [p.popen.returncode for p in procs] == [0] * nodes, [p.output()[-2000:] for p in procs]
    rounds_run = requests.get(f"{url}/api/rounds", params={"experiment": experiment}, timeout=5).json()["rounds"]
    assert [(r["status"], r["updates"]) for r in rounds_run] == [("closed", nodes)] * rounds
    accuracy = [federated_accuracy(url, experiment, v) for v in range(rounds + 1)]
    print(f"{experiment}: federated accuracy by model version {[round(a, 4) for a in accuracy]}")
    return rounds_run, accuracy, procs


def createexperiment(env, *args):
    done = subprocess.run([sys.executable, "manage.py", "createexperiment", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_pytorch_cnn_example_learns_digits_across_three_nodes(start_server, start_node, e2e_env, tmp_path):
    # Prepare: version 0 is the CNN's state_dict, saved with safetensors as a PyTorch user would
    url, server = start_server()
    init = tmp_path / "init.safetensors"
    subprocess.run([sys.executable, "examples/pytorch_digits/init_model.py", str(init)], cwd=ROOT, check=True)
    created = createexperiment(e2e_env, "digits-cnn", "--init", str(init), "--total-nodes", "3", "--min-nodes", "3",
                               "--max-rounds", "3", "--epochs", "2", "--learning-rate", "0.05")
    assert "6 tensors" in created and "conv.weight" in created and "8x1x3x3" in created

    # Execute
    rounds, accuracy, procs = run_federation(url, server, start_node, "digits-cnn",
                                             "examples.pytorch_digits.client:client")

    # Assert: the nodes' own held-out digits score every model; the federation learned
    assert accuracy[0] < 0.3 and accuracy[3] > 0.8 and accuracy[3] > accuracy[1]
    assert rounds[2]["metrics"]["federated_accuracy"] == pytest.approx(accuracy[3])
    assert rounds[2]["metrics"]["federated_nodes"] == 3
    assert "matched to the experiment's by name" in procs[0].output()


def test_the_scikit_learn_example_takes_its_initial_model_from_the_first_node(start_server, start_node, e2e_env):
    # Prepare: no initial file; the first node's coef_ and intercept_ become version 0
    url, server = start_server()
    created = createexperiment(e2e_env, "digits-sgd", "--init-from-node", "--total-nodes", "3", "--min-nodes", "3",
                               "--max-rounds", "3", "--epochs", "3", "--learning-rate", "0.01")
    assert "initializing" in created

    # Execute
    rounds, accuracy, procs = run_federation(url, server, start_node, "digits-sgd",
                                             "examples.sklearn_logreg.client:client")

    # Assert
    v0 = requests.get(f"{url}/api/models/0", params={"experiment": "digits-sgd"}, timeout=5).json()
    assert v0["contributors"][0]["role"] == "initial_parameters"
    assert accuracy[3] > 0.85 and accuracy[3] >= accuracy[0]
    spec = requests.get(f"{url}/api/experiments", timeout=5).json()
    manifest = next(e for e in spec if e["name"] == "digits-sgd")["model_spec"]
    assert [t["shape"] for t in manifest["tensors"]] == [[10, 64], [10]]


def test_a_flower_quickstart_client_runs_unchanged(start_server, start_node, e2e_env, tmp_path):
    # Prepare: the quickstart's Net, saved in state_dict order (the client relies on it, as in Flower)
    url, server = start_server()
    init = tmp_path / "init.safetensors"
    subprocess.run([sys.executable, "examples/flower_quickstart/init_model.py", str(init)], cwd=ROOT, check=True)
    createexperiment(e2e_env, "digits-flower", "--init", str(init), "--total-nodes", "3", "--min-nodes", "3",
                     "--max-rounds", "3", "--epochs", "2", "--learning-rate", "0.1", "--strategy", "fedadam",
                     "--strategy-params", '{"eta": 0.01}')

    # Execute
    rounds, accuracy, procs = run_federation(url, server, start_node, "digits-flower",
                                             "examples.flower_quickstart.client_app:client_fn")

    # Assert
    assert accuracy[3] > accuracy[0] + 0.3


def test_clients_that_do_not_fit_or_fail_cost_only_their_own_update(start_server, start_node, e2e_env, tmp_path):
    # Prepare: the CNN experiment, and three clients that cannot give it a usable update
    url, server = start_server()
    init = tmp_path / "init.safetensors"
    subprocess.run([sys.executable, "examples/pytorch_digits/init_model.py", str(init)], cwd=ROOT, check=True)
    createexperiment(e2e_env, "digits-cnn", "--init", str(init), "--total-nodes", "2", "--min-nodes", "2")

    # Execute
    wrong = start_node("1", url, "--client", "tests.e2e.clients:wrong_shape", "--experiment", "digits-cnn")
    raising = start_node("2", url, "--client", "tests.e2e.clients:raising", "--experiment", "digits-cnn")
    nan = start_node("3", url, "--client", "tests.e2e.clients:nan", "--experiment", "digits-cnn")
    procs = [server, wrong, raising, nan]
    wait_until(lambda: wrong.popen.poll() is not None, 60, "the mismatched node to stop", procs)
    wait_until(lambda: "skipping the round" in raising.output() and "skipping the round" in nan.output(), 60,
               "the failing clients to skip round 1", procs)

    # Assert: one sentence each, and round 1 is untouched
    assert wrong.popen.returncode == 1
    assert "tensor 'conv.weight' should have shape [8, 1, 3, 3] but has [16, 1, 3, 3]" in wrong.output()
    assert "the client's fit raised RuntimeError: CUDA out of memory (pretend)" in raising.output()
    assert "contains NaN or infinity" in nan.output()
    current = requests.get(f"{url}/api/rounds/current", params={"experiment": "digits-cnn"}, timeout=5).json()
    assert (current["number"], current["status"], current["progress"]["received"]) == (1, "open", 0)
    # ...and the server knows why two nodes will not upload, so the round fails at its deadline, not never
    failures = requests.get(f"{url}/api/rounds/1", params={"experiment": "digits-cnn"}, timeout=5).json()
    assert sorted(failures["node_failures"]) == ["2", "3"]
    assert "CUDA out of memory" in failures["node_failures"]["2"]


def test_a_node_needs_no_django_and_no_server_settings(start_server, e2e_env, tmp_path):
    # Prepare: an environment without Django's settings or a secret key, only the server's address
    url, server = start_server()
    createexperiment(e2e_env, "digits-sgd", "--init-from-node", "--total-nodes", "1", "--min-nodes", "1",
                     "--max-rounds", "2", "--epochs", "1")
    env = {k: v for k, v in e2e_env.items() if not k.startswith(("DJANGO_", "SECRET_KEY", "DEBUG"))}

    # Execute: `python -m fedsite_node` in a process where importing Django fails
    no_django = ("import runpy, sys; sys.modules['django'] = None; "
                 "runpy.run_module('fedsite_node', run_name='__main__', alter_sys=True)")
    node = Proc("sdk-node", [sys.executable, "-c", no_django, "--server", url, "--id", "1", "--experiment",
                             "digits-sgd", "--client", "examples.sklearn_logreg.client:client", "--state-dir",
                             str(tmp_path / "sdk-node")], {**env, "NUM_NODES": "1"}, tmp_path)
    try:
        wait_until(lambda: node.popen.poll() is not None, 120, "the SDK node to finish", [server, node])
    finally:
        node.stop()

    # Assert
    assert node.popen.returncode == 0, node.output()
    assert "our parameters are version 0" in node.output() and "run finished: final model version=2" in node.output()
