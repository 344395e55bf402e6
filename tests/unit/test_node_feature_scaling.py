"""The built-in node scales its --data as the experiment says: with the global scaling it reports its feature
statistics, waits (trains nothing) until the server has combined every node's, then trains on rows scaled with
them; a server that names no scaling gets per-node standardisation and no report, as before the protocol."""

import numpy as np

from aggregation.datasets import NodeData
from aggregation.fl.features import Scaling, feature_stats
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import params_dumps, params_loads, sha256_hex
from fedsite_node.http import ServerRejected
from nodes_app.runner import NodeRunner

SPEC = MLPSpec((3, 4, 2), "classification")


def raw_data() -> NodeData:
    rng = np.random.default_rng(5)
    x = rng.normal(10.0, 3.0, (24, 3))
    y = (x[:, 0] > 10).astype(np.float32)
    return NodeData("csv:t.csv", x, y, x[:6], y[:6], "classification", 2, "t")


class FeatureServer:
    """The ServerClient calls of one open round, plus the /api/features pair."""

    def __init__(self, scaling: str | None, ready_after: int = 0) -> None:
        self.scaling, self.ready_after = scaling, ready_after
        self.token, self.reports, self.uploads, self.asked = None, [], [], 0
        self.model = params_dumps(SPEC, init_parameters(SPEC, 1))
        self.combined = Scaling(np.array([9.0, 10.0, 11.0]), np.array([2.0, 3.0, 4.0]))

    def register(self, node_id, address, enrollment_token=None):
        return {"node_id": node_id, "token": "t", "address": address}

    def current_round(self, wait=0.0, known=None):
        config = {"epochs": 2, "learning_rate": 0.1, "batch_size": 8}
        if self.scaling:
            config["feature_scaling"] = self.scaling
        return {"number": 1, "status": "open", "model_version": 0, "config": config, "progress": {"nodes": []},
                "run": {"status": "running"}, "model_spec": SPEC.to_dict()}

    def report_feature_stats(self, stats):
        if self.scaling is None:
            raise ServerRejected(404, "not_found", "no such endpoint", {})
        self.reports.append(stats)
        return 201, {}

    def feature_scaling(self):
        self.asked += 1
        if self.asked <= self.ready_after:
            return {"status": "collecting", "reported": 1, "required": 3}
        return {"status": "ready", **self.combined.to_dict(), "nodes": 3, "count": 72}

    def download_model(self, version):
        return self.model, sha256_hex(self.model)

    def upload_update(self, number, body):
        self.uploads.append(body)
        return 201, {}


def test_a_node_reports_its_sums_waits_for_the_combined_scaling_then_trains_with_it(tmp_path):
    # Prepare: the server combines only at the node's second look
    server = FeatureServer("global", ready_after=1)
    runner = NodeRunner("2", server, tmp_path, data=raw_data(), sleep=lambda s: None)

    # Execute
    first = runner.step()
    uploads_while_collecting, state_while_collecting = len(server.uploads), runner.state
    second = runner.step()

    # Assert: the exact sums of its raw training rows, sent once; no training until the scaling was fixed
    expected = feature_stats(raw_data().x_train).to_dict()
    assert server.reports == [expected]
    assert (first, uploads_while_collecting, state_while_collecting) == (False, 0, "preparing")
    assert second and len(server.uploads) == 1
    np.testing.assert_allclose(runner.data.x_train, server.combined.apply(raw_data().x_train))
    assert runner.data.scaling == "global" and len(params_loads(SPEC, server.uploads[0])[0]) == 4


def test_node_scaling_reports_for_the_servers_test_set_but_standardises_alone(tmp_path):
    # Prepare
    server = FeatureServer("node")
    runner = NodeRunner("2", server, tmp_path, data=raw_data(), sleep=lambda s: None)

    # Execute
    runner.step()

    # Assert
    assert len(server.reports) == 1 and server.asked == 0 and len(server.uploads) == 1
    np.testing.assert_allclose(runner.data.x_train.mean(axis=0), 0, atol=1e-5)


def test_a_server_that_names_no_scaling_gets_no_report_and_the_node_standardises_alone(tmp_path):
    # Prepare: a server from before federated statistics (its /api/features would be a 404)
    server = FeatureServer(None)
    runner = NodeRunner("2", server, tmp_path, data=raw_data(), sleep=lambda s: None)

    # Execute
    runner.step()

    # Assert
    assert server.reports == [] and len(server.uploads) == 1
    np.testing.assert_allclose(runner.data.x_train.std(axis=0), 1, atol=1e-4)


def test_with_stats_noise_a_node_reports_noisy_sums_of_clipped_values_and_the_exact_count(tmp_path):
    # Prepare
    server = FeatureServer("global")
    runner = NodeRunner("2", server, tmp_path, data=raw_data(), sleep=lambda s: None, stats_noise=1.0, stats_clip=12.0,
                        stats_rng=np.random.default_rng(3))

    # Execute
    runner.step()

    # Assert: not the exact sums (noise), but the row count is exact
    exact = feature_stats(np.clip(raw_data().x_train, -12, 12))
    sent = server.reports[0]
    assert sent["count"] == exact.count
    assert not np.allclose(sent["sum"], exact.sum) and np.allclose(sent["sum"], exact.sum, atol=12 * 6 * 5)
