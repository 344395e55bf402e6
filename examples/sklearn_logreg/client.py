"""A scikit-learn linear classifier on 8x8 digits, federated through its coef_ and intercept_.

    python manage.py createexperiment digits-sgd --init-from-node --total-nodes 3 --max-rounds 10
    python manage.py runnode --id 1 --client examples.sklearn_logreg.client:client --experiment digits-sgd
"""

import warnings

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

from examples.digits_partition import load_partition
from fedsite_node import NumPyClient

CLASSES = np.arange(10)


class LogRegClient(NumPyClient):
    def __init__(self) -> None:
        x, self.y, x_test, self.y_test = load_partition()
        self.x, self.x_test = x.astype(np.float64), x_test.astype(np.float64)  # what SGDClassifier trains in
        self.model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
        # One pass over the local data gives the model its shape (coef_ (10, 64), intercept_ (10,)); with
        # --init-from-node the first node's weights become everyone's version 0.
        self.model.partial_fit(self.x, self.y, classes=CLASSES)

    def get_parameters(self, config):
        return [self.model.coef_, self.model.intercept_]

    def set_parameters(self, parameters):
        self.model.coef_ = np.array(parameters[0], dtype=np.float64)
        self.model.intercept_ = np.array(parameters[1], dtype=np.float64)

    def fit(self, parameters, config):
        self.set_parameters(parameters)
        self.model.set_params(eta0=float(config.get("learning_rate", 0.01)), learning_rate="constant")
        rng = np.random.default_rng(int(config.get("server_round", 0)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(int(config.get("epochs", 1))):
                order = rng.permutation(len(self.y))
                self.model.partial_fit(self.x[order], self.y[order])
        loss = log_loss(self.y, self.model.predict_proba(self.x), labels=CLASSES)
        return self.get_parameters(config), len(self.y), {"loss": loss}

    def evaluate(self, parameters, config):
        self.set_parameters(parameters)
        loss = log_loss(self.y_test, self.model.predict_proba(self.x_test), labels=CLASSES)
        return loss, len(self.y_test), {"accuracy": self.model.score(self.x_test, self.y_test)}


client = LogRegClient
