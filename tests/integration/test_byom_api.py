"""Bring your own model over the stable interfaces: createexperiment, POST /api/experiments, a node's initial
model, federated evaluations and the provenance a downloaded model carries."""
import base64
import io
import json
import re

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from aggregation.fl.manifest import Manifest
from aggregation.fl.serde import dumps, loads, params_dumps
from aggregation.models import Experiment, ModelVersion, Round
from aggregation.services.experiment_setup import experiment_setup
from aggregation.services.lifecycle import experiment_stop

pytestmark = pytest.mark.django_db(transaction=True)

rng = np.random.default_rng(0)
TENSORS = {"conv.weight": rng.normal(size=(8, 1, 3, 3)).astype(np.float32),
           "conv.bias": rng.normal(size=(8,)).astype(np.float16),
           "fc.weight": rng.normal(size=(10, 72)).astype(np.float32),
           "fc.bias": np.zeros(10, np.float64)}


def version_tensors(name: str, version: int = 0) -> dict[str, np.ndarray]:
    return loads(bytes(ModelVersion.objects.get(experiment__name=name, version=version).parameters))[0]


def basic(username: str, password: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_createexperiment_makes_version_0_exactly_the_files_tensors(tmp_path):
    # Prepare
    path = tmp_path / "cnn.safetensors"
    path.write_bytes(dumps(TENSORS))
    out = io.StringIO()

    # Execute
    call_command("createexperiment", "cnn", "--init", str(path), "--strategy", "fedadam", "--strategy-params",
                 '{"eta": 0.05}', "--total-nodes", "2", stdout=out)

    # Assert: same names in the file's order, float32, the same values bit for bit
    stored = version_tensors("cnn")
    assert list(stored) == list(TENSORS)
    for name, array in TENSORS.items():
        assert stored[name].dtype == np.float32
        assert stored[name].tobytes() == array.astype(np.float32).tobytes()
    experiment = Experiment.objects.get(name="cnn")
    assert (experiment.status, experiment.strategy, experiment.strategy_params, experiment.total_nodes) == (
        "running", "fedadam", {"eta": 0.05}, 2)
    assert Manifest.from_dict(experiment.model_spec).tensors[1].init_dtype == "F16"
    assert experiment.rounds.get().status == Round.Status.OPEN
    text = out.getvalue()
    assert "model: 4 tensors, 810 parameters (float32)" in text
    assert "conv.weight" in text and "8x1x3x3" in text and "10x72" in text and "round 1 is open" in text


@pytest.mark.parametrize(("tensors", "sentence"), [
    ({"w": np.zeros(3, np.float32), "steps": np.array(4, np.int64)}, "tensor 'steps' is I64; only floating-point"),
    ({"w": np.array([np.nan], np.float32)}, "tensor 'w' contains NaN or infinity"),
    ({}, "the file holds no tensors"),
])
def test_createexperiment_refuses_a_bad_file_with_a_sentence_and_creates_nothing(tmp_path, tensors, sentence):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(dumps(tensors))

    with pytest.raises(CommandError, match=f"The initial file {path} cannot be used: {sentence}"):
        call_command("createexperiment", "bad", "--init", str(path))

    assert not Experiment.objects.exists()


def test_createexperiment_refuses_a_missing_file_and_a_taken_name(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(dumps(TENSORS))
    call_command("createexperiment", "cnn", "--init", str(path), stdout=io.StringIO())

    with pytest.raises(CommandError, match="cannot read .*nope.safetensors: No such file"):
        call_command("createexperiment", "other", "--init", str(tmp_path / "nope.safetensors"))
    with pytest.raises(CommandError, match="An experiment named 'cnn' already exists."):
        call_command("createexperiment", "cnn", "--init", str(path))
    with pytest.raises(CommandError, match="round_timeout_s: nan is not a finite number of at least 0.1."):
        call_command("createexperiment", "other", "--init", str(path), "--round-timeout", "nan")
    assert list(Experiment.objects.values_list("name", flat=True)) == ["cnn"]


def test_an_operator_creates_an_experiment_over_http_with_an_init_file(api):
    # Prepare
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")
    body = {"name": "cnn", "init": SimpleUploadedFile("cnn.safetensors", dumps(TENSORS)), "strategy": "fedavgm",
            "strategy_params": '{"momentum": 0.5}', "total_nodes": "2", "min_nodes": "1"}

    # Execute
    response = api.post("/api/experiments", body, format="multipart", **basic("op", "pw"))

    # Assert
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["status"] == "running" and answer["model_version"] == 0 and answer["strategy"] == "fedavgm"
    assert [t["name"] for t in answer["model_spec"]["tensors"]] == list(TENSORS)
    version0 = ModelVersion.objects.get(experiment__name="cnn", version=0)
    assert answer["sha256"] == version0.sha256
    assert version_tensors("cnn")["fc.weight"].tobytes() == TENSORS["fc.weight"].tobytes()
    assert loads(bytes(version0.parameters))[1]["fedsite.init"] == "file cnn.safetensors"


@pytest.mark.parametrize("who", ["node", "anonymous", "not_staff", "wrong_password"])
def test_only_an_operator_may_create_an_experiment(api, register, who):
    get_user_model().objects.create_user("user", "u@example.org", "pw")
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")
    auth = {"node": bearer(register("a")), "anonymous": {}, "not_staff": basic("user", "pw"),
            "wrong_password": basic("op", "nope")}[who]

    response = api.post("/api/experiments", {"name": "x", "init_from_node": True}, format="json", **auth)

    # No credentials (a node's Bearer token is none for operators) or wrong ones: 401; a user who is not staff: 403.
    assert response.status_code == (403 if who == "not_staff" else 401)
    assert set(response.json()) == {"error", "detail"}
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(("body", "form", "error", "sentence"), [
    ({"name": "a", "init": SimpleUploadedFile("m.st", dumps({"mask": np.array([True])}))}, "multipart",
     "bad_init_file", "The initial file m.st cannot be used: tensor 'mask' is BOOL"),
    ({"name": "b", "init": SimpleUploadedFile("m.st", dumps(TENSORS)), "init_from_node": "true"}, "multipart",
     "bad_option", "Give an initial file or ask for the first node's parameters, not both."),
    ({"name": "c", "init": "m.safetensors"}, "multipart", "bad_option", "init must be a file upload"),
    ({"name": "d", "init_from_node": True, "strategy": "fedsgd"}, "json", "invalid_experiment",
     "unknown strategy 'fedsgd'"),
    ({"name": "e", "init_from_node": True, "round_timeout_s": "nan"}, "json", "invalid_experiment",
     "round_timeout_s: nan is not a finite number of at least 0.1."),
    ({"name": "f", "init_from_node": "1", "update_max_norm": "-1"}, "multipart", "invalid_experiment",
     "update_max_norm: -1.0 is not a finite number above 0."),
    ({"name": "g", "init_from_node": True, "total_nodes": "many"}, "json", "invalid_experiment",
     "total_nodes: .many. value must be an integer."),
    ([{"name": "h"}], "json", "bad_json", "Send a JSON object"),
])
def test_an_operator_gets_a_sentence_for_a_bad_file_or_option(api, body, form, error, sentence):
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")

    response = api.post("/api/experiments", body, format=form, **basic("op", "pw"))

    assert (response.status_code, response.json()["error"]) == (400, error)
    assert re.search(sentence, response.json()["detail"]), response.json()["detail"]
    assert not Experiment.objects.exists()


def test_options_sent_as_text_are_stored_and_answered_as_numbers(api):
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")

    response = api.post("/api/experiments", {"name": "t", "init_from_node": "yes", "total_nodes": "1",
                                             "round_timeout_s": "30"}, format="multipart", **basic("op", "pw"))

    assert response.status_code == 201, response.content
    assert (response.json()["total_nodes"], response.json()["min_nodes"]) == (1, 1)  # the quorum follows
    assert Experiment.objects.values_list("total_nodes", "round_timeout_s").get() == (1, 30.0)


GETS = ["/api/rounds/current", "/api/rounds", "/api/models/latest", "/api/models/latest/download",
        "/api/model/params", "/api/dashboard", "/status", "/api/models/0", "/api/rounds/1"]


def test_a_waiting_experiment_takes_its_model_from_the_first_node_only(api, register):
    # Prepare
    get_user_model().objects.create_superuser("op", "op@example.org", "pw")
    created = api.post("/api/experiments", {"name": "byon", "init_from_node": True, "total_nodes": 2},
                       format="json", **basic("op", "pw"))
    first, second = register("a"), register("b")
    offered = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float16)}

    # Execute: everything a node or a dashboard reads while it waits, then two nodes offer
    reads = {url: api.get(f"{url}?experiment=byon") for url in GETS}
    early = api.generic("POST", "/api/rounds/1/updates?experiment=byon", params_dumps(
        Manifest.from_shapes(["w"], [offered["w"]]), [offered["w"]]), content_type="application/octet-stream",
        **bearer(first))
    won = api.generic("POST", "/api/models/initial?experiment=byon", dumps(offered),
                      content_type="application/octet-stream", **bearer(first))
    lost = api.generic("POST", "/api/models/initial?experiment=byon", dumps(offered),
                       content_type="application/octet-stream", **bearer(second))

    # Assert
    assert created.status_code == 201 and created.json()["status"] == "initializing"
    assert {url: r.status_code for url, r in reads.items() if r.status_code >= 500} == {}
    assert reads["/api/rounds/current"].json()["run"]["status"] == "initializing"
    assert reads["/api/models/latest"].json()["error"] == "no_model"
    assert (early.status_code, early.json()["error"]) == (409, "not_initialized")
    assert won.status_code == 201 and won.json()["tensors"] == 2
    assert (lost.status_code, lost.json()["error"]) == (409, "already_initialized")
    experiment = Experiment.objects.get(name="byon")
    assert experiment.status == "running" and Manifest.from_dict(experiment.model_spec).names() == ["w", "b"]
    version0 = ModelVersion.objects.get(experiment=experiment, version=0)
    assert version0.contributors == [{"node": "a", "role": "initial_parameters"}]
    assert version_tensors("byon")["b"].tobytes() == np.ones(3, np.float32).tobytes()
    current = api.get("/api/rounds/current?experiment=byon").json()
    assert (current["number"], current["status"], current["model_version"]) == (1, "open", 0)


def test_an_experiment_stopped_before_any_node_gave_its_model_answers_without_a_server_error(api, register):
    experiment = experiment_setup(name="byon", init_from_node=True)
    token = register("a")
    experiment_stop(experiment)

    reads = {url: api.get(f"{url}?experiment=byon").status_code for url in GETS}
    upload = api.generic("POST", "/api/rounds/1/updates?experiment=byon", dumps({"w": np.zeros(2, np.float32)}),
                         content_type="application/octet-stream", **bearer(token))
    initial = api.generic("POST", "/api/models/initial?experiment=byon", dumps({"w": np.zeros(2, np.float32)}),
                          content_type="application/octet-stream", **bearer(token))

    assert {url: code for url, code in reads.items() if code >= 500} == {}
    assert (upload.status_code, upload.json()["error"]) == (409, "not_initialized")
    assert (initial.status_code, initial.json()["error"]) == (409, "already_initialized")
    assert api.get("/api/rounds/current?experiment=byon").json()["run"]["status"] == "stopped"


@pytest.fixture
def evaluated(register, uploader):
    """Experiment `mlp` (the built-in model, two nodes) after one round, and the nodes' tokens."""
    experiment_setup(name="mlp", total_nodes=2, min_nodes=2, seed=3)
    tokens = [register("a"), register("b")]
    params = [p.astype(np.float32) for p in loads(bytes(ModelVersion.objects.get(version=0).parameters))[0].values()]
    for token, n in zip(tokens, (10, 30)):
        assert uploader(token, 1, params, n, experiment="mlp").status_code == 201
    return tokens


def evaluate(api, token, body, version=1, raw=None):
    return api.generic("POST", f"/api/models/{version}/evaluations?experiment=mlp",
                       raw if raw is not None else json.dumps(body), content_type="application/json",
                       **(bearer(token) if token else {}))


def test_evaluations_are_example_weighted_and_merged_into_the_rounds_metrics(api, evaluated):
    a, b = evaluated

    first = evaluate(api, a, {"loss": 1.0, "num_examples": 10, "metrics": {"accuracy": 0.9}})
    second = evaluate(api, b, {"loss": 2.0, "num_examples": 30, "metrics": {"accuracy": 0.5, "f1": 0.4}})

    assert (first.status_code, second.status_code) == (201, 201)
    summary = {"loss": 1.75, "accuracy": 0.6, "f1": 0.4, "examples": 40, "nodes": 2}
    assert second.json()["evaluation"] == pytest.approx(summary)
    assert ModelVersion.objects.get(version=1).evaluation == pytest.approx(summary)
    metrics = Round.objects.get(number=1).metrics
    assert metrics["federated_loss"] == pytest.approx(1.75) and metrics["federated_accuracy"] == pytest.approx(0.6)
    assert metrics["federated_nodes"] == 2 and "loss" in metrics  # the training loss is kept beside it
    history = api.get("/api/rounds?experiment=mlp").json()["rounds"][0]
    assert history["metrics"]["federated_loss"] == pytest.approx(1.75)


def test_an_evaluation_repeat_is_idempotent_and_every_mistake_is_a_json_error(api, evaluated):
    a, _ = evaluated
    body = {"loss": 0.5, "num_examples": 4, "metrics": {"accuracy": 0.8}}
    assert evaluate(api, a, body).status_code == 201

    cases = {
        "repeat": evaluate(api, a, body),
        "different": evaluate(api, a, {**body, "loss": 0.6}),
        "unknown_version": evaluate(api, a, body, version=9),
        "no_token": evaluate(api, None, body),
        "bad_json": evaluate(api, a, None, raw="{loss: 1"),
        "nan": evaluate(api, a, None, raw='{"loss": NaN, "num_examples": 4}'),
        "huge_loss": evaluate(api, a, None, raw='{"loss": 1' + "0" * 400 + ', "num_examples": 4}'),
        "huge_count": evaluate(api, a, {**body, "num_examples": 10**30}),
        "not_object": evaluate(api, a, [1, 2]),
        "no_loss": evaluate(api, a, {"num_examples": 4}),
    }

    statuses = {k: (r.status_code, r.json().get("error")) for k, r in cases.items()}
    assert statuses == {
        "repeat": (200, None), "different": (409, "already_evaluated"), "unknown_version": (404, "unknown_version"),
        "no_token": (401, "missing_token"), "bad_json": (400, "bad_json"), "nan": (400, "bad_metrics"),
        "huge_loss": (400, "bad_metrics"), "huge_count": (400, "bad_num_examples"), "not_object": (400, "bad_json"),
        "no_loss": (400, "bad_metrics"),
    }
    assert cases["repeat"].json()["status"] == "already_accepted"
    assert ModelVersion.objects.get(version=1).evaluation["loss"] == 0.5


def test_a_downloaded_model_says_where_it_came_from(api, evaluated, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(dumps(TENSORS))
    call_command("createexperiment", "cnn", "--init", str(path), stdout=io.StringIO())

    mlp = loads(api.get("/api/models/1/download?experiment=mlp").content)[1]
    cnn = loads(api.get("/api/models/latest/download?experiment=cnn").content)[1]

    assert {k: mlp[k] for k in ("fedsite.experiment", "fedsite.version", "fedsite.round", "fedsite.parent",
                                "fedsite.strategy", "fedsite.task")} == {
        "fedsite.experiment": "mlp", "fedsite.version": "1", "fedsite.round": "1", "fedsite.parent": "0",
        "fedsite.strategy": "fedavg", "fedsite.task": "regression"}
    assert json.loads(mlp["fedsite.model"])["kind"] == "mlp"
    assert [t["name"] for t in json.loads(mlp["fedsite.manifest"])] == ["w1", "b1", "w2", "b2"]
    assert (cnn["fedsite.experiment"], cnn["fedsite.version"], cnn["fedsite.round"], cnn["fedsite.parent"]) == (
        "cnn", "0", "", "")
    assert json.loads(cnn["fedsite.manifest"])[1] == {"name": "conv.bias", "shape": [8], "dtype": "F32",
                                                      "init_dtype": "F16"}
    assert "fedsite.model" not in cnn and "fedsite.task" not in cnn
    assert cnn["fedsite.init"] == f"file {path}"


def test_an_operator_request_with_an_unknown_field_is_refused_with_the_list(api):
    get_user_model().objects.create_superuser("op2", "op2@example.org", "pw")

    response = api.post("/api/experiments", {"name": "x", "round_timeout": 60}, format="json",
                        **basic("op2", "pw"))

    assert response.status_code == 400 and "Unknown field(s): round_timeout" in response.json()["detail"]
    assert "round_timeout_s" in response.json()["detail"] and not Experiment.objects.exists()


def test_a_node_token_is_told_that_creating_needs_an_operator(api, register):
    response = api.post("/api/experiments", {"name": "x"}, format="json", **bearer(register("a")))

    assert (response.status_code, response.json()["error"]) == (401, "operator_required")


def test_the_json_download_says_which_tensors_its_flat_list_holds(api, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(dumps(TENSORS))
    call_command("createexperiment", "cnn-json", "--init", str(path), stdout=io.StringIO())

    body = api.get("/api/models/0/download?experiment=cnn-json&format=json").json()

    assert [(t["name"], t["shape"]) for t in body["tensors"]] == [(n, list(a.shape)) for n, a in TENSORS.items()]
    assert len(body["parameters"]) == sum(a.size for a in TENSORS.values())
