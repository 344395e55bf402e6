"""Write version 0 of the example's CNN: `python examples/pytorch_digits/init_model.py init.safetensors`."""

import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, ".")
from examples.pytorch_digits.client import Net  # noqa: E402

torch.manual_seed(0)
save_file(Net().state_dict(), sys.argv[1] if len(sys.argv) > 1 else "init.safetensors")
