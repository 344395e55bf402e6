"""Compressed uploads over the API: fp16/int8 deltas are decoded against the round's model and stored as float32."""
import json

import numpy as np
import pytest

from aggregation.fl.compression import update_decode, update_encode
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import dumps, loads, params_dumps, params_loads
from aggregation.models import Experiment, Update

pytestmark = pytest.mark.django_db

SPEC = MLPSpec()
META = {"num_examples": "10", "metrics": json.dumps({"loss": 0.25})}


def base_model(api, version: int = 0, experiment: str = "exp") -> list[np.ndarray]:
    body = api.get(f"/api/models/{version}/download?experiment={experiment}").content
    return params_loads(SPEC, body)[0]


def trained(base: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(p + rng.normal(0, 0.02, p.shape)).astype(np.float32) for p in base]


def post(api, token: str, number: int, body: bytes, experiment: str = "exp"):
    return api.generic("POST", f"/api/rounds/{number}/updates?experiment={experiment}", body,
                       content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
def test_a_compressed_upload_is_stored_as_the_float32_base_plus_its_delta(api, experiment, register, encoding):
    # Prepare
    token = register("1")
    base = base_model(api)
    update = trained(base, 1)
    body = update_encode(SPEC, update, base, encoding, META)

    # Execute
    response = post(api, token, 1, body)

    # Assert: the stored blob is canonical float32, bit for bit the decoded update, within the codec's bound
    assert response.status_code == 201, response.content
    stored = Update.objects.get()
    tensors, metadata = loads(bytes(stored.parameters))
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float32)} and metadata == {}
    decoded = update_decode(SPEC, body, base)[0]
    assert bytes(stored.parameters) == params_dumps(SPEC, decoded)
    assert stored.size == len(params_dumps(SPEC, update)) > len(body)
    scales = loads(body)[0]
    for name, got, new, old in zip(SPEC.names(), params_loads(SPEC, bytes(stored.parameters))[0], update, base):
        delta = np.abs(new.astype(np.float64) - old)
        bound = scales[f"{name}.scale"] / 2 if encoding == "int8" else 2.0**-11 * delta + 2.0**-25
        assert (np.abs(got.astype(np.float64) - new) <= bound * (1 + 1e-6) + 1e-6 * np.abs(new)).all()
    assert stored.num_examples == 10 and stored.metrics == {"loss": 0.25}
    assert stored.delta_norm == pytest.approx(np.sqrt(sum(((g - b) ** 2).sum() for g, b in zip(decoded, base))))


def test_int8_uploads_close_a_round_and_the_model_is_their_average(api, make_experiment, register,
                                                                   django_capture_on_commit_callbacks):
    # Prepare
    make_experiment(update_encoding="int8")
    tokens = [register(str(i)) for i in (1, 2, 3)]
    base = base_model(api)
    updates = [trained(base, seed) for seed in (1, 2, 3)]

    # Execute: the last upload starts the aggregation on commit
    with django_capture_on_commit_callbacks(execute=True):
        answers = [post(api, t, 1, update_encode(SPEC, u, base, "int8", META)) for t, u in zip(tokens, updates)]

    # Assert: FedAvg of the decoded updates, each within half an int8 step (about 3e-4 here) of the true one
    assert [a.status_code for a in answers] == [201, 201, 201]
    model = base_model(api, 1)
    for got, *exact in zip(model, *updates):
        assert np.abs(got - np.mean(exact, axis=0)).max() < 0.001


def test_the_experiment_tells_nodes_its_encoding_and_accepts_any_other(api, make_experiment, register):
    # Prepare: an int8 experiment and a default one
    make_experiment(update_encoding="int8")
    make_experiment(name="plain")
    token = register("1")
    base = base_model(api)

    # Execute: this node sends fp16 although the experiment asks for int8
    response = post(api, token, 1, update_encode(SPEC, trained(base, 1), base, "fp16", META))

    # Assert: decoding is self-describing, so the upload is accepted; the config and the list name the setting
    assert response.status_code == 201, response.content
    assert api.get("/api/rounds/current?experiment=exp").json()["config"]["update_encoding"] == "int8"
    assert "update_encoding" not in api.get("/api/rounds/current?experiment=plain").json()["config"]
    listed = {e["name"]: e["update_encoding"] for e in api.get("/api/experiments").json()}
    assert listed == {"exp": "int8", "plain": "none"}
    assert Experiment.objects.get(name="exp").update_encoding == "int8"


def _zeros(dtype: type) -> dict[str, np.ndarray]:
    return {n: np.zeros(s, dtype=dtype) for n, s in zip(SPEC.names(), SPEC.shapes())}


def _int8_with_scale(scale: float) -> bytes:
    tensors = {}
    for name, values in _zeros(np.int8).items():
        tensors[name], tensors[f"{name}.scale"] = values, np.array(scale, dtype=np.float32)
    return dumps(tensors, {**META, "encoding": "int8-delta"})


@pytest.mark.parametrize(("body", "sentence"), [
    (_int8_with_scale(float("nan")), "tensor 'w1.scale' is nan, but a scale must be a finite number of at least 0"),
    (dumps(_zeros(np.int8), {**META, "encoding": "int8-delta"}), "missing 'w1.scale'"),
    (dumps(_zeros(np.int8), {**META, "encoding": "fp16-delta"}),
     "tensor 'w1' holds int8 values, but a fp16-delta update stores float16"),
    (dumps(_zeros(np.float16), {**META, "encoding": "gzip"}), "declares encoding 'gzip', which this server cannot"),
], ids=["nan-scale", "no-scales", "wrong-dtype", "unknown-encoding"])
def test_a_malformed_compressed_body_is_refused_with_400_and_a_sentence(api, experiment, register, body, sentence):
    # Prepare
    token = register("1")

    # Execute
    response = post(api, token, 1, body)

    # Assert
    assert response.status_code == 400, response.content
    answer = response.json()
    assert answer["error"] == "bad_safetensors"
    assert answer["detail"].startswith("The safetensors body is rejected: ") and sentence in answer["detail"]
    assert Update.objects.count() == 0


def test_a_compressed_upload_for_a_round_that_does_not_exist_is_a_404(api, experiment, register):
    # Prepare
    token = register("1")
    base = base_model(api)

    # Execute
    response = post(api, token, 9, update_encode(SPEC, trained(base, 1), base, "int8", META))

    # Assert
    assert response.status_code == 404 and response.json()["error"] == "unknown_round"
    assert "Round 9 does not exist" in response.json()["detail"]
    assert response.json()["current_round"] == 1  # where the node should upload instead, as for float32
