"""A client written as in Flower's quickstart-pytorch `client_app.py`, run unchanged by fedsite:

    python manage.py runnode --id 1 --client examples.flower_quickstart.client_app:client_fn --experiment digits-flower

Only the import falls back to fedsite's NumPyClient (same three methods) where `flwr` is not installed;
`flwr` cannot be installed beside this project's pins (it needs protobuf < 7).
"""

import os

import torch

try:
    from flwr.client import NumPyClient
except ImportError:
    from fedsite_node import NumPyClient

from examples.flower_quickstart.task import Net, get_weights, load_data, set_weights, test, train


# Define Flower Client
class FlowerClient(NumPyClient):
    def __init__(self, trainloader, valloader, local_epochs, learning_rate):
        self.net = Net()
        self.trainloader = trainloader
        self.valloader = valloader
        self.local_epochs = local_epochs
        self.lr = learning_rate
        self.device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

    def fit(self, parameters, config):
        """Train the model with data of this client."""
        set_weights(self.net, parameters)
        results = train(self.net, self.trainloader, self.local_epochs, self.lr, self.device)
        return get_weights(self.net), len(self.trainloader.dataset), {"loss": results}

    def evaluate(self, parameters, config):
        """Evaluate the model on the data this client has."""
        set_weights(self.net, parameters)
        loss, accuracy = test(self.net, self.valloader, self.device)
        return loss, len(self.valloader.dataset), {"accuracy": accuracy}


def client_fn():
    """Construct a Client for this node: Flower reads these from its Context, fedsite from the environment."""
    partition_id = int(os.environ["NODE_ID"]) - 1
    num_partitions = int(os.environ.get("NUM_NODES", "3"))
    trainloader, valloader = load_data(partition_id, num_partitions)
    return FlowerClient(trainloader, valloader, local_epochs=2, learning_rate=0.1).to_client()
