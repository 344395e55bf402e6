"""Write version 0 of the quickstart's Net in state_dict order (the quickstart's set_weights relies on it):
`python examples/flower_quickstart/init_model.py init.safetensors`."""

import sys

import torch

sys.path.insert(0, ".")
from examples.flower_quickstart.task import Net  # noqa: E402
from fedsite_node import save_model  # noqa: E402

torch.manual_seed(0)
save_model(sys.argv[1] if len(sys.argv) > 1 else "init.safetensors", Net().state_dict())
