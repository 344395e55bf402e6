"""The node's work loop, with no Django: enroll, long-poll rounds, download, fit, upload, evaluate.

`NodeLoop` is the protocol; what trains is a subclass: `ClientNode` runs a user's NumPyClient, and
the built-in MLP node (nodes_app.runner.NodeRunner) runs fedsite's own model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aggregation.fl.compression import ENCODINGS, update_encode
from aggregation.fl.manifest import ModelSpec, spec_from_dict
from aggregation.fl.serde import SerdeError, check_finite, dumps, params_dumps, params_loads, sha256_hex
from fedsite_node.adapter import ClientAdapter, ClientMismatch
from fedsite_node.http import Backoff, ServerClient, ServerRejected, ServerUnavailable

logger = logging.getLogger("fedsite.node")

PROBLEM_DELAY = 10.0
NDArrays = list[np.ndarray]


class RegistrationError(Exception):
    """The server will not let this node in, or its model cannot take part; retrying cannot fix it."""


class NodeLoop:
    """One federated node; step() is a single unit of work so tests can drive it."""

    def __init__(self, node_id: str, client: ServerClient, state_dir: Path | str, *, address: str = "",
                 poll_wait: float = 25.0, enrollment_token: str | None = None, keep_serving: bool = False,
                 min_poll_interval: float = 1.0, sleep: Callable[[float], Any] | None = None,
                 data_info: dict[str, Any] | None = None) -> None:
        self.node_id, self.client, self.address = node_id, client, address
        # What the node says about its local data (data set, partitioning, rows), shown on the dashboard.
        self.data_info = data_info or {}
        self.token_path = Path(state_dir) / "token"
        self.poll_wait, self.keep_serving = poll_wait, keep_serving
        self.enrollment_token, self.min_poll_interval = enrollment_token, min_poll_interval
        self.stop = threading.Event()
        # Sleeps wait on the stop event so a shutdown never waits out a backoff.
        self._sleep = sleep or (lambda seconds: self.stop.wait(seconds))
        self.backoff = Backoff(lambda seconds: self._sleep(seconds))
        self._lock = threading.Lock()  # a node's own HTTP API threads share the model with the loop
        self.spec: ModelSpec | None = None
        self._spec_seen: dict[str, Any] | None = None  # the model_spec JSON self.spec came from
        self.params: NDArrays = []
        self.model_version: Any = None
        self.model_sha256 = ""
        self._config: dict[str, Any] = {}
        self.state, self.round = "starting", None
        self.last_loss: float | None = None
        self.registered = self.finished = False
        self._known: int | None = None  # last round number we are done with: the long-poll key
        self._done_rounds: set[int] = set()
        self._pending: tuple[int, bytes] | None = None  # a trained update not yet delivered
        self._cache: dict[int, tuple[bytes, str]] = {}
        self._evaluated: set[int] = set()
        self._final_version: Any = None
        self._last_problem = ""

    # --- what a subclass provides ------------------------------------------------------------------
    def spec_changed(self, spec: ModelSpec) -> None:
        """The experiment's model is `spec` (first contact, or another experiment): check and adopt it."""
        self.spec = spec

    def prepare_round(self) -> bool | None:
        """Called before a round's download, with the round's config in self._config; may raise
        RegistrationError when this node cannot take part, or return False when it is not ready yet (the
        round is then tried again at the next poll)."""
        return None

    def fit_round(self, base: NDArrays, config: dict[str, Any], number: int) -> tuple[NDArrays, int, dict[str, float]]:
        """Train from `base`: (new parameters in manifest order, num_examples, metrics with at least `loss`)."""
        raise NotImplementedError

    def evaluate_model(self, params: NDArrays, config: dict[str, Any]) -> tuple[float, int, dict[str, float]] | None:
        """Score a model on local held-out data: (loss, num_examples, metrics), or None to take no part."""
        return None

    def initial_parameters(self) -> tuple[list[str], NDArrays] | None:
        """(names, arrays) to offer as version 0 of an experiment that waits for a node's model; None: cannot."""
        return None

    # --- the protocol ------------------------------------------------------------------------------
    def ensure_registered(self) -> None:
        """Reuse the stored token if the server still knows it, otherwise enroll fresh."""
        self.state = "registering"
        if self.token_path.exists():
            self.client.token = self.token_path.read_text().strip()
            try:
                self.client.register(self.node_id, self.address, data=self.data_info)
                logger.info("node %s: stored token accepted, address %s", self.node_id, self.address or "(none)")
                self.registered, self.state = True, "waiting"
                return
            except ServerRejected as exc:
                if exc.status != 401:
                    raise RegistrationError(f"re-registration refused: {exc}") from exc
                logger.warning("node %s: server rejected the stored token; enrolling afresh", self.node_id)
                self.token_path.unlink(missing_ok=True)
        self.client.token = None
        try:
            answer = self.client.register(self.node_id, self.address, self.enrollment_token, data=self.data_info)
        except ServerRejected as exc:
            if exc.error == "node_exists":
                msg = (f"node id {self.node_id} is already registered and no valid token is stored in "
                       f"{self.token_path}; restore that file, or on the server issue a new token with "
                       f"`python manage.py createnode --id {self.node_id} --rotate > {self.token_path}`")
            else:
                msg = f"enrollment refused: {exc}"
            logger.error("node %s: %s", self.node_id, msg)
            raise RegistrationError(msg) from exc
        token = str(answer["token"])
        self.token_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.token_path.with_suffix(".tmp")
        # Created 0600 from the start (not chmod-ed later): the token is a credential.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(token)
        os.replace(tmp, self.token_path)
        self.client.token, self.registered, self.state = token, True, "waiting"
        logger.info("node %s: enrolled with address %s; token saved to %s", self.node_id, self.address or "(none)",
                    self.token_path)

    def step(self) -> bool:
        """Poll once and handle the answer; True if this node trained or uploaded something."""
        try:
            info = self.client.current_round(wait=self.poll_wait, known=self._known)
            self.backoff.succeeded()
            run = info.get("run") or {}
            if run.get("status") == "initializing":
                return self._offer_initial()
            if run.get("status") in ("finished", "stopped") and run.get("model_version") is None:
                # Stopped before any node gave the initial model: there is no model to fetch or spec to read.
                if not self.finished:
                    self._report_done()
                self.finished, self.state = True, "finished"
                return False
            # Parsed only when it changes: a manifest of thousands of tensors comes with every poll.
            if info.get("model_spec") and info["model_spec"] != self._spec_seen:
                spec = spec_from_dict(info["model_spec"])
                if spec != self.spec:
                    with self._lock:
                        self.spec_changed(spec)
                self._spec_seen = info["model_spec"]
            if run.get("status") in ("finished", "stopped"):  # max_rounds, a stop condition, or an operator
                self._finish(run.get("model_version"))
                return False
            if run.get("status") == "paused":  # the next poll waits until the run resumes (a new round) or ends
                if self.state != "paused":
                    logger.info("node %s: %s; waiting for it to resume", self.node_id,
                                run.get("finish_reason") or "the run was paused")
                self._known, self.state = info.get("number"), "paused"
                return False
            self.finished, number = False, info.get("number")
            self.round = number
            if (number is None or info.get("status") != "open" or number in self._done_rounds
                    or self.node_id in (info.get("progress") or {}).get("nodes", [])):
                self._known, self.state = number, "waiting"
                return False
            return self._train_and_upload(int(number), info)
        except ServerUnavailable as exc:
            self.state = "offline"
            self.backoff.failed(exc)
        except ServerRejected as exc:
            if exc.error == "unknown_experiment":  # a typo in --experiment: waiting cannot fix it
                raise RegistrationError(f"{exc.detail} Check --experiment (the server lists its experiments at "
                                        "/api/experiments).") from exc
            if exc.status != 401:
                self._problem(f"server refused a request: {exc}")
            else:
                # run() registers again: the token is re-checked, then a fresh enrollment or a fatal error.
                logger.warning("server no longer accepts our token (%s)", exc.detail)
                self.registered = False
        except ValueError as exc:  # SerdeError included
            self._problem(f"cannot use what the server sent: {exc}")
        return False

    def _problem(self, message: str) -> None:
        # A persistent problem is logged once, not at every retry.
        if message != self._last_problem:
            logger.error("%s", message)
            self._last_problem = message
        self._sleep(PROBLEM_DELAY)

    def _offer_initial(self) -> bool:
        """The experiment waits for a node's model: offer ours (the first offer wins), or wait for it."""
        self._known, self.state = 0, "waiting"
        offered = self.initial_parameters()
        if offered is None:
            return False
        names, arrays = offered
        try:
            answer = self.client.upload_initial(dumps(dict(zip(names, arrays))))
            logger.info("node %s: our parameters are version 0 (%d tensors, sha256 %s...)", self.node_id,
                        len(arrays), str(answer.get("sha256", ""))[:12])
        except ServerRejected as exc:
            if exc.error != "already_initialized":
                raise
            logger.info("node %s: another node provided the initial model first", self.node_id)
        return True

    def _fetch_model(self, version: int | str) -> None:
        """Make `version` the in-memory model, downloading it unless cached; the sha256 must match."""
        assert self.spec is not None
        cached = self._cache.get(version) if isinstance(version, int) else None
        if cached:
            body, sha = cached
        else:
            body, claimed = self.client.download_model(version)
            sha = sha256_hex(body)
            if claimed != sha:
                raise SerdeError(f"model v{version} sha256 mismatch: header {claimed or '(none)'}, body {sha}")
        params, _meta = params_loads(self.spec, body)
        check_finite(params, self.spec.names())
        if isinstance(version, int):
            self._cache = {v: c for v, c in self._cache.items() if v >= version - 2} | {version: (body, sha)}
        with self._lock:
            self.params = [np.array(p, dtype=np.float32) for p in params]
            self.model_version, self.model_sha256 = version, sha

    def _train_and_upload(self, number: int, info: dict[str, Any]) -> bool:
        if self._pending is None or self._pending[0] != number:
            self._config = {**(info.get("config") or {}), "server_round": number}
            if self.prepare_round() is False:
                self.state = "preparing"
                return False
            version = info["model_version"]
            self._fetch_model(version)
            self.state = "training"
            base = self.params  # the round's model: compressed uploads carry the difference to it
            try:
                new, num_examples, metrics = self.fit_round(base, self._config, number)
            except ValueError as exc:  # SerdeError and ClientFailed included
                # Training is deterministic, so retrying this round would fail the same way; the server
                # is told, so the round fails at its deadline (or at once) instead of waiting for us.
                logger.error("round %d: training failed, skipping the round: %s", number, exc)
                self._report_failure(number, str(exc))
                self._mark_done(number)
                return True
            self.last_loss = metrics.get("loss")
            logger.info("round %d: trained model v%s on %d examples%s", number, version, num_examples,
                        "".join(f", {k} {v:.4f}" for k, v in metrics.items()))
            metadata = {"num_examples": str(num_examples), "base_version": str(version),
                        "metrics": json.dumps(metrics)}
            self._pending = (number, self._encoded(number, new, base, metadata))
        self.state = "uploading"
        try:
            status, answer = self.client.upload_update(number, self._pending[1])
            logger.info("round %d: update %s (sha256 %s...), received %s/%s, status %s", number,
                        "accepted" if status == 201 else "already accepted", str(answer.get("sha256", ""))[:12],
                        answer.get("received"), answer.get("required"), answer.get("status"))
        except ServerRejected as exc:
            if exc.status == 401:
                raise
            if exc.error == "round_closed":
                logger.info("round %d closed before our upload (server is at round %s)",
                            number, exc.payload.get("current_round"))
            else:
                logger.error("round %d: upload refused: %s", number, exc)
        self._mark_done(number)
        # The round's model is the previous round's result: score it now that our update is in.
        self._evaluate(info["model_version"])
        return True

    def _report_failure(self, number: int, reason: str) -> None:
        try:
            self.client.report_failure(number, reason)
        except ServerRejected as exc:  # the round closed meanwhile, or an older server without the endpoint
            logger.info("round %d: the server did not take our failure report: %s", number, exc)
        except ServerUnavailable:
            logger.warning("round %d: could not report the failure (server unavailable)", number)

    def _evaluate(self, version: Any) -> None:
        """Federated evaluation of the in-memory model `version`, reported once per version."""
        if not isinstance(version, int) or version in self._evaluated:
            return
        try:
            scores = self.evaluate_model(self.params, self._config)
        except ValueError as exc:
            logger.error("model v%d: evaluation failed: %s", version, exc)
            self._evaluated.add(version)
            return
        if scores is None:
            return
        loss, num_examples, metrics = scores
        try:
            _status, answer = self.client.report_evaluation(version, loss, num_examples, metrics)
        except ServerRejected as exc:
            logger.error("model v%d: evaluation refused: %s", version, exc)
        else:
            summary = answer.get("evaluation") or {}
            logger.info("model v%d: evaluated on %d local examples: loss %.4f%s (all nodes so far: %s)", version,
                        num_examples, loss, "".join(f", {k} {v:.4f}" for k, v in metrics.items()),
                        ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        self._evaluated.add(version)

    def _encoded(self, number: int, new: NDArrays, base: NDArrays, metadata: dict[str, str]) -> bytes:
        """The upload in the round's update_encoding; float32 (which every server reads) when that cannot be used."""
        assert self.spec is not None
        encoding = str(self._config.get("update_encoding") or "none")
        if encoding not in ENCODINGS:
            logger.warning("round %d: update encoding %r is unknown here; uploading float32", number, encoding)
            encoding = "none"
        try:
            body = update_encode(self.spec, new, base, encoding, metadata)
        except SerdeError as exc:  # e.g. a delta beyond fp16's range
            logger.warning("round %d: cannot encode the update as %s (%s); uploading float32", number, encoding, exc)
            encoding, body = "none", params_dumps(self.spec, new, metadata)
        logger.info("round %d: update encoded as %s, %d bytes", number, encoding, len(body))
        return body

    def _mark_done(self, number: int) -> None:
        self._pending, self._last_problem = None, ""
        self._done_rounds.add(number)
        self._known, self.state = number, "waiting"

    def _finish(self, version: Any) -> None:
        if not self.finished or version != self._final_version:
            self._fetch_model(version if version is not None else "latest")
            self._final_version, self.finished = version, True
            logger.info("run finished: final model version=%s sha256=%s", version, self.model_sha256)
            self._evaluate(version)
            self._report_done()
        self.state = "finished"

    def _report_done(self) -> None:
        """Say we are done with this run, so the dashboard shows `done` instead of letting us age to offline."""
        try:
            self.client.report_done()
        except ServerRejected as exc:  # resumed meanwhile, or an older server without the endpoint
            logger.info("the server did not take our done report: %s", exc)
        except ServerUnavailable:
            logger.warning("could not tell the server we are done (server unavailable)")

    def run(self, stop: threading.Event | None = None) -> None:
        """Register (retrying while the server is down), then step until stopped or the run is finished."""
        self.stop = stop or self.stop
        while not self.stop.is_set():
            if not self.registered:
                try:
                    self.ensure_registered()
                    self.backoff.succeeded()
                except ServerUnavailable as exc:
                    self.backoff.failed(exc)
                continue
            started = time.monotonic()
            try:
                worked = self.step()
            except (RegistrationError, ClientMismatch):
                raise  # the data or the model cannot change while the node runs: stop with the reason
            except Exception:
                # A node should outlive its own bugs; the traceback is in the log.
                logger.exception("unexpected error in the node loop; retrying")
                worked = False
                self._sleep(PROBLEM_DELAY)
            if self.finished:
                if not self.keep_serving:
                    return
                # Keep answering the node API; look now and then for a new run.
                self.stop.wait(max(self.poll_wait, self.min_poll_interval))
            elif not worked:
                # Guards against a hot loop if the server answers long-polls at once.
                self.stop.wait(max(0.0, self.min_poll_interval - (time.monotonic() - started)))


class ClientNode(NodeLoop):
    """A node that trains with a user's NumPyClient (`fit`, `evaluate`, `get_parameters`)."""

    def __init__(self, node_id: str, client: ServerClient, state_dir: Path | str, numpy_client: Any,
                 **options: Any) -> None:
        super().__init__(node_id, client, state_dir, **options)
        self.adapter = ClientAdapter(numpy_client)
        self._said_no_initial = False

    def spec_changed(self, spec: ModelSpec) -> None:
        try:
            self.adapter.bind(spec)  # ClientMismatch stops the node with the first tensor that does not fit
        except ClientMismatch as exc:
            chosen = getattr(self.client, "experiment", None)
            which = (f"experiment {chosen!r}" if chosen else
                     "the server's default experiment (choose another with --experiment)")
            raise ClientMismatch(f"the client does not fit {which}: {exc}") from None
        self.spec = spec
        logger.info("node %s: the client's %d tensors fit the experiment's model", self.node_id,
                    len(spec.names()))

    def fit_round(self, base: NDArrays, config: dict[str, Any], number: int) -> tuple[NDArrays, int, dict[str, float]]:
        return self.adapter.fit(base, config)

    def evaluate_model(self, params: NDArrays, config: dict[str, Any]) -> tuple[float, int, dict[str, float]] | None:
        return self.adapter.evaluate(params, config) if self.adapter.can_evaluate else None

    def initial_parameters(self) -> tuple[list[str], NDArrays] | None:
        if not self.adapter.offers_parameters():
            if not self._said_no_initial:
                self._said_no_initial = True
                logger.info("node %s: the experiment waits for a node's initial model; this client has no "
                            "get_parameters, so another node must provide it", self.node_id)
            return None
        return self.adapter.initial()
