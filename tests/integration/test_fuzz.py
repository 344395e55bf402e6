"""Whatever a client sends, the API answers with a status below 500 and a JSON error body."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.django_db

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
bodies = st.one_of(
    json_values.map(lambda v: ("application/json", json.dumps(v).encode())),
    st.binary(max_size=300).map(lambda b: ("application/octet-stream", b)),
    st.binary(max_size=100).map(lambda b: ("application/json", b)),
    st.text(max_size=50).map(lambda t: ("text/plain", t.encode())),
)
POSTS = ["/api/rounds/1/updates?experiment=exp", "/api/rounds/999/updates?experiment=exp", "/message?experiment=exp",
         "/api/nodes/register", "/api/features?experiment=exp"]
GETS = ["/api/rounds/current?experiment=exp&wait={q}&known={q}", "/api/models/{q}?experiment=exp",
        "/api/models/{q}/download?experiment=exp&format={q}", "/api/rounds/{q}?experiment={q}",
        "/status?experiment={q}", "/api/features?experiment={q}"]


def _assert_json_error_or_success(response) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        body = response.json()
        assert set(body) >= {"error", "detail"} and body["detail"]


@FUZZ
@given(path=st.sampled_from(POSTS), body=bodies, authenticated=st.booleans())
def test_any_post_body_gets_an_answer_below_500(experiment, api, register, path, body, authenticated):
    content_type, payload = body

    response = _post(experiment, api, register, path, payload, content_type, authenticated)

    _assert_json_error_or_success(response)


def _post(experiment, api, register, path: str, payload: bytes, content_type: str, authenticated: bool):
    """POST as an enrolled node (one token per experiment fixture) or anonymously."""
    if authenticated and not hasattr(experiment, "_fuzz_token"):
        experiment._fuzz_token = register("fuzz")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {experiment._fuzz_token}"} if authenticated else {}
    return api.generic("POST", path, payload, content_type=content_type, **headers)


@FUZZ
@given(template=st.sampled_from(GETS), value=st.text(max_size=15))
def test_any_query_gets_an_answer_below_500(experiment, api, template, value):
    from urllib.parse import quote

    response = api.get(template.format(q=quote(value)))

    _assert_json_error_or_success(response)


# The shapes of input that once answered 500: deep nesting, integers beyond float range, digits that
# str.isdigit() accepts and int() does not, each where a field, a metric or a whole body is expected.
hostile_scalars = st.one_of(
    st.integers(400, 6000).map(lambda n: "1" + "0" * n),
    st.sampled_from(['"²"', '"١٢٣"', '"𝟗"', '"Ⅻ"', '" 7 "', "1e999", "-1e999", "NaN", "Infinity"]),
    st.integers(10, 6000).map(lambda n: '"' + "9" * n + '"'),
    st.integers(900, 120_000).map(lambda n: "[" * n + "]" * n),
)
hostile_bodies = st.one_of(
    st.integers(900, 120_000).map(lambda n: "[" * n),
    st.integers(900, 60_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    hostile_scalars.map(lambda v: f'{{"parameters": [0.5], "num_examples": {v}, "metrics": {{}}}}'),
    hostile_scalars.map(lambda v: f'{{"parameters": [0.5], "num_examples": 3, "metrics": {{"loss": {v}}}}}'),
    hostile_scalars.map(lambda v: f'{{"UpdateModel": {{"params": [{v}]}}}}'),
    hostile_scalars.map(lambda v: f'{{"node_id": {v}, "address": {v}}}'),
)


@FUZZ
@given(path=st.sampled_from(POSTS), body=hostile_bodies, authenticated=st.booleans())
def test_hostile_json_gets_an_answer_below_500(experiment, api, register, path, body, authenticated):
    response = _post(experiment, api, register, path, body.encode(), "application/json", authenticated)

    _assert_json_error_or_success(response)
