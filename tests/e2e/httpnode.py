"""A minimal node for fault tests: registers and uploads known parameters over the real HTTP API."""
import json

import numpy as np
import requests

from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import params_dumps, params_loads

ENROLLMENT = "e2e-enrollment"


class HttpNode:
    def __init__(self, url: str, node_id: str) -> None:
        self.node_id = node_id
        self.session = requests.Session()
        answer = self.session.post(f"{url}/api/nodes/register", json={"node_id": node_id},
                                   headers={"X-Enrollment-Token": ENROLLMENT}, timeout=10)
        assert answer.status_code == 201, answer.text
        self.session.headers["Authorization"] = f"Bearer {answer.json()['token']}"

    @staticmethod
    def params(seed: int) -> list[np.ndarray]:
        return init_parameters(MLPSpec(), seed)

    def upload(self, url: str, number: int, seed: int, num_examples: int) -> requests.Response:
        body = params_dumps(MLPSpec(), self.params(seed), {"num_examples": str(num_examples),
                                                          "metrics": json.dumps({"loss": 1.0})})
        return self.session.post(f"{url}/api/rounds/{number}/updates", data=body, timeout=30,
                                 headers={"Content-Type": "application/octet-stream"})


def model(url: str, version: int | str) -> list[np.ndarray]:
    body = requests.get(f"{url}/api/models/{version}/download", timeout=10).content
    return params_loads(MLPSpec(), body)[0]


def rounds(url: str) -> list[dict]:
    return requests.get(f"{url}/api/rounds", timeout=10).json()["rounds"]
