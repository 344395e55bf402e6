"""A PyTorch CNN on 8x8 digits, federated by fedsite: the model, its training loop and a NumPyClient.

    python manage.py runnode --id 1 --client examples.pytorch_digits.client:client --experiment digits-cnn
"""

import numpy as np
import torch
from torch import nn

from examples.digits_partition import load_partition
from fedsite_node import NumPyClient

torch.set_num_threads(1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)   # (8, 1, 3, 3) and (8,)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(x.view(-1, 1, 8, 8))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class DigitsClient(NumPyClient):
    def __init__(self) -> None:
        self.net = Net()
        x, y, xt, yt = load_partition()  # this node's digits; NODE_ID picks the share
        self.train = (torch.from_numpy(x), torch.from_numpy(y))
        self.test = (torch.from_numpy(xt), torch.from_numpy(yt))

    def get_parameter_names(self, config):
        return list(self.net.state_dict())

    def get_parameters(self, config):
        return [t.detach().numpy() for t in self.net.state_dict().values()]

    def set_parameters(self, parameters):
        self.net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                                  zip(self.net.state_dict(), parameters)})

    def fit(self, parameters, config):
        self.set_parameters(parameters)
        x, y = self.train
        optimizer = torch.optim.SGD(self.net.parameters(), lr=float(config.get("learning_rate", 0.05)), momentum=0.9)
        generator = torch.Generator().manual_seed(int(config.get("server_round", 0)))
        self.net.train()
        for _ in range(int(config.get("epochs", 1))):
            for batch in torch.randperm(len(y), generator=generator).split(32):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.net(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
        return self.get_parameters(config), len(y), {"loss": float(loss)}

    def evaluate(self, parameters, config):
        self.set_parameters(parameters)
        x, y = self.test
        self.net.eval()
        with torch.no_grad():
            logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        return loss, len(y), {"accuracy": (logits.argmax(1) == y).float().mean().item()}


client = DigitsClient  # runnode calls it once to make this node's client
