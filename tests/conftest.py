"""Shared fixtures: experiments, registered nodes and an upload helper that speaks the real API."""
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from aggregation.fl.model import MLPSpec, flatten, init_parameters
from aggregation.fl.serde import params_dumps


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def make_experiment(db) -> Callable[..., Any]:
    from aggregation.services.experiments import experiment_create

    def make(name: str = "exp", **fields: Any) -> Any:
        defaults = {"model_spec": MLPSpec().to_dict(), "strategy": "fedavg", "total_nodes": 3, "min_nodes": 2,
                    "round_timeout_s": 300.0, "max_rounds": 0, "seed": 7}
        return experiment_create(name=name, **{**defaults, **fields})

    return make


@pytest.fixture
def experiment(make_experiment) -> Any:
    return make_experiment()


@pytest.fixture
def register(api: APIClient) -> Callable[[str], str]:
    """Register node `node_id` through the API (DEBUG is on in tests) and return its token."""

    def do(node_id: str, address: str = "") -> str:
        response = api.post("/api/nodes/register", {"node_id": node_id, "address": address}, format="json",
                            HTTP_X_ENROLLMENT_TOKEN="test-enrollment-token")
        assert response.status_code == 201, response.content
        return response.json()["token"]

    return do


def params_for(seed: int) -> list[np.ndarray]:
    return init_parameters(MLPSpec(), seed)


def upload(api: APIClient, token: str, number: int, params: list[np.ndarray], num_examples: int = 10,
           *, experiment: str = "exp", binary: bool = True, metrics: dict | None = None) -> Any:
    url = f"/api/rounds/{number}/updates?experiment={experiment}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if binary:
        body = params_dumps(MLPSpec(), params, {"num_examples": str(num_examples),
                                                "metrics": json.dumps(metrics or {"loss": 1.0})})
        return api.generic("POST", url, body, content_type="application/octet-stream", **auth)
    payload = {"parameters": flatten(params).tolist(), "num_examples": num_examples, "metrics": metrics or {}}
    return api.post(url, payload, format="json", **auth)


@pytest.fixture
def uploader(api: APIClient) -> Callable[..., Any]:
    def do(token: str, number: int, params: list[np.ndarray], num_examples: int = 10, **kwargs: Any) -> Any:
        return upload(api, token, number, params, num_examples, **kwargs)

    return do
