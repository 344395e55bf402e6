"""NodeRunner encodes its upload as the round's config says (fl.compression), and falls back to float32."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from aggregation.fl.compression import update_decode
from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import init_parameters, train
from aggregation.fl.serde import loads, params_loads
from nodes_app.runner import NodeRunner
from tests.unit.test_node_runner import CONFIG, SPEC, FakeClient


def runner_for(tmp_path: Any, encoding: str) -> tuple[NodeRunner, FakeClient]:
    fake = FakeClient()
    fake.info["config"] = {**CONFIG, "update_encoding": encoding}
    runner = NodeRunner("1", fake, tmp_path / "node1", poll_wait=0.0, min_poll_interval=0.0, sleep=lambda s: None)
    return runner, fake


def expected_update() -> list[np.ndarray]:
    x, y = synthetic_regression(1, n=100)
    return train(SPEC, init_parameters(SPEC, 1), x, y, **CONFIG, seed=1 + 1)[0]


@pytest.mark.parametrize(("encoding", "dtype"), [("fp16", np.float16), ("int8", np.int8)])
def test_the_node_uploads_its_trained_update_as_a_delta_in_the_rounds_encoding(tmp_path, encoding, dtype):
    # Prepare
    runner, fake = runner_for(tmp_path, encoding)

    # Execute
    runner.step()

    # Assert: the body holds the requested dtype and decodes against model v1 close to the training result
    body = fake.uploads[0][1]
    tensors, metadata = loads(body)
    assert metadata["encoding"] == f"{encoding}-delta" and tensors["w1"].dtype == dtype
    base = params_loads(SPEC, fake.models[1])[0]
    decoded = update_decode(SPEC, body, base)[0]
    for got, want, old in zip(decoded, expected_update(), base):
        step = np.abs(want - old).max() / 127 if encoding == "int8" else 0.0
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=step / 2 + 1e-6)


def test_an_encoding_unknown_to_the_node_falls_back_to_float32(tmp_path, caplog):
    # Prepare
    runner, fake = runner_for(tmp_path, "zstd")

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedsite.node"):
        runner.step()

    # Assert
    params, metadata = params_loads(SPEC, fake.uploads[0][1])
    assert "encoding" not in metadata
    for got, want in zip(params, expected_update()):
        np.testing.assert_array_equal(got, want)
    assert "update encoding 'zstd' is unknown here; uploading float32" in caplog.text
