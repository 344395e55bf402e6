"""Operators create experiments in the admin through experiment_setup: from a file, a node or the built-in MLP."""
import html
import os

import numpy as np
import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile

from aggregation.fl.manifest import spec_from_dict
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import dumps, params_loads
from aggregation.models import Evaluation, Experiment, ModelVersion, Round
from nodes_app.models import Node

pytestmark = pytest.mark.django_db

ADD = "/admin/aggregation/experiment/add/"


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "conv.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(8).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 8)).astype(np.float32),
        "fc.bias": np.zeros(10, dtype=np.float32),
    }


def _add_form_data(admin_client, **changes: object) -> dict[str, object]:
    """What the add page's browser form submits when the operator changes only `changes`."""
    form = admin_client.get(ADD).context["adminform"].form
    data: dict[str, object] = {}
    for name, field in form.fields.items():
        if isinstance(field, forms.FileField | forms.BooleanField):
            continue
        value = form[name].value()
        data[name] = "" if value is None else value
    return {**data, **changes}


def _page_text(response) -> str:
    return html.unescape(response.content.decode())


def test_an_uploaded_safetensors_file_becomes_version_0_and_round_1_opens(admin_client):
    tensors = _tensors()
    upload = SimpleUploadedFile("cnn.safetensors", dumps(tensors))

    response = admin_client.post(ADD, _add_form_data(admin_client, name="cnn", init_file=upload))

    assert response.status_code == 302, _page_text(response)
    experiment = Experiment.objects.get(name="cnn")
    assert experiment.status == Experiment.Status.RUNNING
    version0 = experiment.versions.get(version=0)
    params, metadata = params_loads(spec_from_dict(experiment.model_spec), version0.parameters)
    assert [t["name"] for t in experiment.model_spec["tensors"]] == list(tensors)
    for decoded, original in zip(params, tensors.values(), strict=True):
        assert decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, original)
    assert metadata["fedsite.init"] == "file cnn.safetensors"
    round1 = experiment.rounds.get()
    assert (round1.number, round1.status, round1.base_version_id) == (1, Round.Status.OPEN, version0.pk)


def test_taking_the_model_from_the_first_node_creates_an_initializing_experiment_without_a_version(admin_client):
    response = admin_client.post(ADD, _add_form_data(admin_client, name="from-node", init_from_node="on"))

    assert response.status_code == 302, _page_text(response)
    experiment = Experiment.objects.get(name="from-node")
    assert experiment.status == Experiment.Status.INITIALIZING
    assert not experiment.versions.exists() and not experiment.rounds.exists()


@pytest.mark.parametrize("content, sentence", [
    (dumps({"w": np.ones((2, 2), dtype=np.float32), "steps": np.array([3], dtype=np.int64)}),
     "The initial file bad.safetensors cannot be used: tensor 'steps' is I64; only floating-point tensors"),
    (os.urandom(64), "The initial file bad.safetensors cannot be used:"),
], ids=["int64 tensor", "random bytes"])
def test_a_bad_initial_file_shows_the_reason_on_the_form_and_creates_nothing(admin_client, content, sentence):
    upload = SimpleUploadedFile("bad.safetensors", content)

    response = admin_client.post(ADD, _add_form_data(admin_client, name="bad", init_file=upload))

    assert response.status_code == 200
    assert sentence in _page_text(response)
    assert response.context["adminform"].form.non_field_errors()
    assert not Experiment.objects.exists() and not ModelVersion.objects.exists() and not Round.objects.exists()


def test_a_file_and_the_first_node_together_are_refused(admin_client):
    upload = SimpleUploadedFile("cnn.safetensors", dumps(_tensors()))

    response = admin_client.post(ADD, _add_form_data(admin_client, name="both", init_file=upload,
                                                     init_from_node="on"))

    assert response.status_code == 200
    assert "Give an initial file or ask for the first node's parameters, not both." in _page_text(response)
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("model_spec, expected", [
    ("", MLPSpec().to_dict()),
    ("{}", MLPSpec().to_dict()),
    ('{"kind": "mlp", "layers": [4, 16, 3], "task": "classification"}',
     MLPSpec(layers=(4, 16, 3), task="classification").to_dict()),
], ids=["empty", "empty object", "given"])
def test_a_plain_add_creates_version_0_and_round_1_of_the_builtin_mlp(admin_client, model_spec, expected):
    response = admin_client.post(ADD, _add_form_data(admin_client, name="mlp", model_spec=model_spec, seed=5))

    assert response.status_code == 302, _page_text(response)
    experiment = Experiment.objects.get(name="mlp")
    assert experiment.model_spec == expected and experiment.seed == 5
    assert experiment.status == Experiment.Status.RUNNING
    version0 = experiment.versions.get(version=0)
    params, _ = params_loads(spec_from_dict(expected), version0.parameters)
    assert [p.shape for p in params] == spec_from_dict(expected).shapes()
    assert experiment.rounds.get().number == 1 and experiment.rounds.get().status == Round.Status.OPEN


def test_an_invalid_option_is_refused_with_the_services_sentence(admin_client):
    response = admin_client.post(ADD, _add_form_data(admin_client, name="quorum", total_nodes=2, min_nodes=3))

    assert response.status_code == 200
    assert "min_nodes: The quorum cannot be larger than total_nodes." in _page_text(response)
    assert not Experiment.objects.exists()


def test_the_change_form_shows_the_model_read_only(admin_client):
    admin_client.post(ADD, _add_form_data(admin_client, name="cnn",
                                          init_file=SimpleUploadedFile("cnn.safetensors", dumps(_tensors()))))
    experiment = Experiment.objects.get(name="cnn")

    response = admin_client.get(f"/admin/aggregation/experiment/{experiment.pk}/change/")

    assert response.status_code == 200
    form = response.context["adminform"].form
    # the model, and the strategy that made its versions (it has round 1), are read-only; the rest is editable
    assert {"model_spec", "name", "status", "strategy", "strategy_params"}.isdisjoint(form.fields)
    assert "epochs" in form.fields
    page = _page_text(response)
    assert 'name="model_spec"' not in page and '"conv.weight"' in page  # the JSON, shown as text
    assert "4 tensors, 170 parameters (float32)" in page
    assert "<code>conv.weight</code> 8×1×3×3" in page


def test_a_change_cannot_replace_the_model(admin_client, experiment):
    before = experiment.model_spec
    data = _add_form_data(admin_client, name="renamed", model_spec='{"kind": "mlp", "layers": [2, 2]}')

    response = admin_client.post(f"/admin/aggregation/experiment/{experiment.pk}/change/",
                                 {**data, "status": "stopped", "epochs": 3})

    assert response.status_code == 302, _page_text(response)
    experiment.refresh_from_db()
    assert (experiment.name, experiment.model_spec, experiment.status) == ("exp", before, "running")
    assert experiment.epochs == 3  # the other fields still change


def test_evaluations_are_listed_read_only_and_the_version_shows_its_summary(admin_client, experiment, register):
    register("a")
    version0 = experiment.versions.get(version=0)
    Evaluation.objects.create(version=version0, node=Node.objects.get(), loss=0.25, num_examples=40)
    ModelVersion.objects.filter(pk=version0.pk).update(evaluation={"loss": 0.25, "examples": 40, "nodes": 1})
    evaluation = Evaluation.objects.get()

    listing = admin_client.get("/admin/aggregation/evaluation/")
    detail = admin_client.get(f"/admin/aggregation/evaluation/{evaluation.pk}/change/")
    add = admin_client.get("/admin/aggregation/evaluation/add/")
    version_page = admin_client.get(f"/admin/aggregation/modelversion/{version0.pk}/change/")

    assert listing.status_code == 200 and b"0.25" in listing.content
    assert detail.status_code == 200 and b'name="loss"' not in detail.content
    assert add.status_code == 403
    assert '"examples":40' in _page_text(version_page)  # compact JSON


def test_a_taken_name_is_refused_and_the_existing_experiment_is_untouched(admin_client, experiment):
    response = admin_client.post(ADD, _add_form_data(admin_client, name="exp", seed=99))

    assert response.status_code == 200
    assert "An experiment named 'exp' already exists." in _page_text(response)
    assert Experiment.objects.get().seed == experiment.seed and ModelVersion.objects.count() == 1


def test_the_stop_action_ends_a_run_and_the_nodes_see_it(admin_client):
    # Prepare
    from aggregation.services.experiment_setup import experiment_setup

    experiment_setup(name="to-stop")

    # Execute
    response = admin_client.post("/admin/aggregation/experiment/", {
        "action": "stop_runs", "_selected_action": [Experiment.objects.get(name="to-stop").pk]})

    # Assert: stopped with the operator's name, and the round state tells nodes the run is over
    assert response.status_code == 302
    stopped = Experiment.objects.get(name="to-stop")
    assert stopped.status == "stopped" and stopped.finish_reason.startswith("stopped by ")
    state = admin_client.get("/api/rounds/current", {"experiment": "to-stop"}).json()
    assert state["run"]["status"] == "stopped"


def test_the_resume_action_runs_a_stopped_experiment_again(admin_client):
    from aggregation.services.experiment_setup import experiment_setup
    from aggregation.services.lifecycle import experiment_stop

    experiment = experiment_setup(name="to-resume")
    experiment_stop(experiment)

    admin_client.post("/admin/aggregation/experiment/", {"action": "resume_runs", "_selected_action": [experiment.pk]})

    assert Experiment.objects.get(name="to-resume").status == "running"
    assert Round.objects.filter(experiment=experiment, status="open").count() == 1


def test_an_update_is_named_by_its_node_id_and_rounds_cannot_be_added_by_hand(admin_client):
    from aggregation.services.experiment_setup import experiment_setup
    from nodes_app.models import Node

    experiment = experiment_setup(name="labels")
    Node.objects.create(node_id="placeholder", token_hash="a" * 64)  # site-b's database key is not its id
    node = Node.objects.create(node_id="site-b", token_hash="b" * 64)
    rnd = Round.objects.get(experiment=experiment, number=1)
    update = rnd.updates.create(node=node, num_examples=1, sha256="0" * 64, size=0, parameters=b"")

    assert str(update) == "labels round 1 from node site-b"
    assert admin_client.get("/admin/aggregation/round/add/").status_code == 403


def test_a_rounds_status_is_never_edited_by_hand_and_a_closed_rounds_deadline_neither(admin_client):
    from aggregation.services.experiment_setup import experiment_setup

    experiment = experiment_setup(name="history")
    rnd = Round.objects.get(experiment=experiment, number=1)
    open_form = admin_client.get(f"/admin/aggregation/round/{rnd.pk}/change/").context["adminform"].form
    Round.objects.filter(pk=rnd.pk).update(status=Round.Status.FAILED)
    closed_form = admin_client.get(f"/admin/aggregation/round/{rnd.pk}/change/").context["adminform"].form

    assert "status" not in open_form.fields and "deadline" in open_form.fields
    assert "status" not in closed_form.fields and "deadline" not in closed_form.fields


def test_history_cannot_be_deleted_or_rewritten_and_wide_json_is_folded(admin_client, experiment, register):
    from rest_framework.test import APIClient

    from aggregation.models import Round, Update
    from tests.conftest import params_for, upload

    token = register("a")
    upload(APIClient(), token, 1, params_for(1), 10, metrics={f"metric_{i}": i / 7 for i in range(30)})
    update, round1 = Update.objects.get(), Round.objects.get(number=1)
    version0 = experiment.versions.get(version=0)

    deletes = [admin_client.post(f"/admin/aggregation/{kind}/{pk}/delete/", {"post": "yes"}).status_code
               for kind, pk in (("update", update.pk), ("round", round1.pk), ("modelversion", version0.pk))]
    bulk = admin_client.post("/admin/aggregation/update/", {"action": "delete_selected", "post": "yes",
                                                           "_selected_action": [update.pk]})
    change = admin_client.post(f"/admin/aggregation/update/{update.pk}/change/", {"num_examples": 999})
    page = _page_text(admin_client.get(f"/admin/aggregation/update/{update.pk}/change/"))
    strategy_post = admin_client.post(f"/admin/aggregation/experiment/{experiment.pk}/change/",
                                      {**_add_form_data(admin_client, name="exp"), "strategy": "fedmedian",
                                       "epochs": 2})

    assert deletes == [403, 403, 403] and bulk.status_code in (200, 302)
    assert (Update.objects.count(), Round.objects.filter(number=1).count(), experiment.versions.count()) == (1, 1, 1)
    assert change.status_code == 403 and Update.objects.get().num_examples == 10
    # 30 metrics are one folded line: the first 160 characters, the whole value under <details>
    assert '<details><summary><code>{"metric_0":0.0,"metric_1":0.14' in page and '"metric_29": 4.14' in page
    experiment.refresh_from_db()
    assert strategy_post.status_code == 302 and (experiment.strategy, experiment.epochs) == ("fedavg", 2)


@pytest.mark.django_db(transaction=True)  # the round aggregates on commit
def test_the_admin_rolls_an_experiment_back_to_a_selected_version(admin_client, experiment, register):
    from rest_framework.test import APIClient

    from aggregation.models import Round
    from tests.conftest import params_for, upload

    tokens = [register(str(i)) for i in range(3)]
    for token in tokens:
        upload(APIClient(), token, 1, params_for(1), 10)
    v0, v1 = experiment.versions.get(version=0), experiment.versions.get(version=1)
    changelist = "/admin/aggregation/modelversion/"

    two = admin_client.post(changelist, {"action": "roll_back_to", "_selected_action": [v0.pk, v1.pk]}, follow=True)
    one = admin_client.post(changelist, {"action": "roll_back_to", "_selected_action": [v0.pk]}, follow=True)

    assert "Select exactly one model version" in two.content.decode()
    text = one.content.decode()
    assert "xp: v2 has v0&#x27;s parameters; a new round is open on it." in text  # the admin capitalises
    v2 = experiment.versions.get(version=2)
    assert v2.parent == v1 and v2.contributors[0]["rollback_to"] == 0 and "in the admin" in v2.contributors[0]["by"]
    assert Round.objects.get(experiment=experiment, number=2).status == "failed"
    assert Round.objects.get(experiment=experiment, number=3).base_version == v2
