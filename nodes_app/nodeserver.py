"""The node's own HTTP API (the prototype's /status, /message and /train) on stdlib http.server."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from nodes_app.runner import NodeRunner

logger = logging.getLogger("fedsite.node")

MAX_BODY_BYTES = 10 * 1024 * 1024


class BadRequest(Exception):
    """A request we refuse; becomes a JSON error answer."""

    def __init__(self, error: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.error, self.detail, self.status = error, detail, status


def _numbers(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise BadRequest("bad_shape", f"{what} must be a non-empty list of numbers")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting and the like
        raise BadRequest("bad_shape", f"{what} is not a rectangular list of numbers ({exc})") from None
    # bool, string and object arrays mean something other than numbers was sent.
    if arr.dtype.kind not in "iuf":
        raise BadRequest("bad_value", f"{what} must contain only numbers")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise BadRequest("not_finite", f"{what} contains NaN or infinity")
    return arr


def _matrix(value: Any, what: str, columns: int, rows: int | None = None) -> np.ndarray:
    """Accept rows of `columns` numbers or a flat list of rows*columns numbers."""
    arr = _numbers(value, what)
    if arr.ndim == 1 and arr.size % columns == 0:
        arr = arr.reshape(-1, columns)
    if arr.ndim != 2 or arr.shape[1] != columns:
        raise BadRequest("bad_shape", f"{what} must be rows of {columns} numbers or a flat list of "
                                      f"n*{columns} numbers, got shape {list(arr.shape)}")
    if rows is not None and arr.shape[0] != rows:
        raise BadRequest("bad_shape", f"data has {rows} samples but {what} has {arr.shape[0]}")
    return arr.astype(np.float32)


class NodeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], runner: NodeRunner, api_token: str | None = None) -> None:
        super().__init__(address, NodeRequestHandler)
        self.runner = runner
        # None: the prototype's open API (runnode --open-api); otherwise every request needs this Bearer token.
        self.api_token = api_token
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):  # a socketserver address may be bytes; ours is a str
            host = host.decode()
        return f"http://{host}:{port}"

    def shutdown(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self.thread is not None:
            super().shutdown()
            self.thread.join()
            self.thread = None
            self.server_close()


class NodeRequestHandler(BaseHTTPRequestHandler):
    server: NodeHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("node api: " + format, *args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _authorize(self) -> None:
        """The operator's Bearer token, checked before anything is read: the API can replace and train the model."""
        expected = self.server.api_token
        if expected is None:
            return
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip() and hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), expected.encode()):
            return
        self.close_connection = True  # the body, if any, stays unread
        if not given:
            raise BadRequest("missing_token", "this node's API needs its token in an 'Authorization: Bearer <token>' "
                                              "header (runnode logs where the token is kept)", 401)
        raise BadRequest("bad_token", "the token is not this node's API token", 401)

    def _handle(self, routes: dict[str, Any]) -> None:
        try:
            self._authorize()
            handler = routes.get(urlsplit(self.path).path)
            if handler is None:
                # Any request body is left unread, so this connection cannot carry another request.
                self.close_connection = True
                raise BadRequest("not_found", f"no such endpoint: {self.command} {urlsplit(self.path).path}", 404)
            self._send(200, handler())
        except BadRequest as exc:
            self._send(exc.status, {"error": exc.error, "detail": exc.detail})
        except Exception:
            logger.exception("node api: %s %s failed", self.command, self.path)
            self._send(500, {"error": "internal_error", "detail": "The node failed to handle this request."})

    def do_GET(self) -> None:
        self._handle({"/status": self._status})

    def do_POST(self) -> None:
        self._handle({"/message": self._message, "/train": self._train})

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._send(405, {"error": "method_not_allowed", "detail": f"{self.command} is not supported here."})

    do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _status(self) -> dict[str, Any]:
        return {"status": "running", "message": "Node is active", **self.server.runner.status_snapshot()}

    def _json_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise BadRequest("length_required", "send the body with a Content-Length header", 411) from None
        if length > MAX_BODY_BYTES or length < 0:
            self.close_connection = True
            raise BadRequest("too_large", f"the body may be at most {MAX_BODY_BYTES} bytes", 413)
        try:
            return json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BadRequest("bad_json", f"the body is not valid JSON ({exc})") from None

    def _message(self) -> dict[str, Any]:
        body = self._json_body()
        if not isinstance(body, dict) or len(body) != 1:
            raise BadRequest("bad_message", 'a message is an object with one variant, e.g. {"Predict": {...}}')
        ((variant, payload),) = body.items()
        handlers = {"UpdateModel": self._update_model, "Train": self._train_on, "Predict": self._predict}
        if variant not in handlers:
            raise BadRequest("unknown_message", f"unknown message {variant!r}; expected one of {', '.join(handlers)}")
        return handlers[variant](payload)

    def _train(self) -> dict[str, Any]:
        return self._train_on(self._json_body())

    def _update_model(self, payload: Any) -> dict[str, Any]:
        params = payload.get("params") if isinstance(payload, dict) else None
        vec = _numbers(params, "params")
        if vec.ndim != 1:
            raise BadRequest("bad_shape", "params must be a flat list of numbers")
        try:
            self.server.runner.replace_model(vec)
        except ValueError as exc:
            raise BadRequest("bad_params", str(exc)) from None
        return {"status": "success", "num_params": int(vec.size)}

    def _train_on(self, payload: Any) -> dict[str, Any]:
        # The prototype sent [[data], [labels]]; the documented form is {"data": ..., "labels": ...}.
        if isinstance(payload, list) and len(payload) == 2:
            payload = {"data": payload[0], "labels": payload[1]}
        if not isinstance(payload, dict) or "data" not in payload or "labels" not in payload:
            raise BadRequest("bad_message", 'training needs {"data": [...], "labels": [...]}')
        spec = self.server.runner.spec
        x = _matrix(payload["data"], "data", spec.layers[0])
        y = _matrix(payload["labels"], "labels", spec.layers[-1], rows=len(x))
        try:
            before, after = self.server.runner.train_local(x, y)
        except ValueError as exc:  # e.g. training diverged to NaN
            raise BadRequest("training_failed", str(exc)) from None
        return {"status": "success", "loss": after, "loss_before": before, "num_examples": len(x)}

    def _predict(self, payload: Any) -> dict[str, Any]:
        data = payload.get("data") if isinstance(payload, dict) else payload
        x = _matrix(data, "data", self.server.runner.spec.layers[0])
        out = self.server.runner.predict(x)
        return {"status": "success", "predictions": (out[:, 0] if out.shape[1] == 1 else out).tolist()}


def start_node_server(runner: NodeRunner, host: str = "127.0.0.1", port: int = 0, *,
                      api_token: str | None = None) -> NodeHTTPServer:
    """Serve the node API from a daemon thread; port 0 picks a free port (see `server.server_port`).

    With `api_token` every request must carry it as a Bearer token; None serves the prototype's open API.
    """
    server = NodeHTTPServer((host, port), runner, api_token)
    # A short poll interval keeps shutdown() quick; the cost is a few idle wake-ups a second.
    server.thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name=f"node-api-{runner.node_id}", daemon=True
    )
    server.thread.start()
    logger.info("node %s: API listening on %s (%s)", runner.node_id, server.url,
                "open to anyone who can reach it" if api_token is None else "Bearer token required")
    return server
