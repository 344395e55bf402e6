"""Clients that misbehave, for the e2e tests: each must cost the federation nothing but its own round."""

import numpy as np

from fedsite_node import NumPyClient


class WrongShapeClient(NumPyClient):
    """The digits CNN with a first layer of 16 filters instead of 8."""

    def get_parameter_names(self, config):
        return ["conv.weight", "conv.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]

    def get_parameters(self, config):
        shapes = [(16, 1, 3, 3), (8,), (32, 128), (32,), (10, 32), (10,)]
        return [np.zeros(s, np.float32) for s in shapes]

    def fit(self, parameters, config):
        return parameters, 1, {}


class RaisingClient(NumPyClient):
    def fit(self, parameters, config):
        raise RuntimeError("CUDA out of memory (pretend)")


class NaNClient(NumPyClient):
    def fit(self, parameters, config):
        return [np.full_like(p, np.nan) for p in parameters], 10, {"loss": 1.0}


wrong_shape, raising, nan = WrongShapeClient(), RaisingClient(), NaNClient()
