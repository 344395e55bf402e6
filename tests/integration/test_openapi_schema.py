"""The OpenAPI schema documents every body, parameter, response, auth scheme and the error shape; its Swagger UI
and ReDoc pages are served from this server's static files."""
import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("/status", "get"), ("/message", "post"), ("/api/dashboard", "get"), ("/api/experiments", "get"),
    ("/api/experiments", "post"), ("/api/experiments/{name}/{action}", "post"), ("/api/model/params", "get"),
    ("/api/models/{version}", "get"), ("/api/models/{version}/download", "get"), ("/api/models/initial", "post"),
    ("/api/models/{version}/evaluations", "post"), ("/api/nodes", "get"), ("/api/nodes/register", "post"),
    ("/api/nodes/done", "post"), ("/api/rounds", "get"), ("/api/rounds/current", "get"),
    ("/api/rounds/{number}", "get"), ("/api/rounds/{number}/updates", "post"),
    ("/api/rounds/{number}/failures", "post"), ("/api/features", "get"), ("/api/features", "post"),
}


@pytest.fixture
def schema(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _operation(schema, path, method):
    return schema["paths"][path][method]


def _params(operation):
    return {p["name"]: p for p in operation.get("parameters", [])}


def _resolve(schema, ref_or_schema):
    ref = ref_or_schema.get("$ref")
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else ref_or_schema


def test_every_operation_is_documented_with_a_response_body(schema):
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}

    assert documented == OPERATIONS
    for path, method in OPERATIONS:
        responses = _operation(schema, path, method)["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, (path, method)
        assert all(responses[code].get("content") for code in responses), (path, method)


def test_every_error_response_has_the_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]

    assert set(error["required"]) == {"error", "detail"}
    for path, method in OPERATIONS:
        for code, response in _operation(schema, path, method)["responses"].items():
            if code.startswith("4"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_an_update_upload_is_documented_as_safetensors_or_json(schema):
    operation = _operation(schema, "/api/rounds/{number}/updates", "post")
    content = operation["requestBody"]["content"]

    assert content["application/octet-stream"]["schema"] == {"type": "string", "format": "binary"}
    body = _resolve(schema, content["application/json"]["schema"])
    assert {"parameters", "num_examples"} <= set(body["required"]) and "metrics" in body["properties"]
    assert body["properties"]["num_examples"]["minimum"] == 1
    assert {"200", "201", "400", "401", "404", "409", "413", "415"} <= set(operation["responses"])
    accepted = _resolve(schema, operation["responses"]["201"]["content"]["application/json"]["schema"])
    assert {"round", "node_id", "sha256", "received", "required", "status"} <= set(accepted["required"])
    assert operation["security"] == [{"nodeToken": []}]


def test_the_long_poll_and_the_experiment_parameters_are_documented(schema):
    params = _params(_operation(schema, "/api/rounds/current", "get"))

    assert params["wait"]["in"] == "query" and params["wait"]["schema"]["type"] == "number"
    assert params["known"]["in"] == "query" and {"type": "integer"} in params["known"]["schema"]["oneOf"]
    for path, method in OPERATIONS - {("/api/experiments", "get"), ("/api/experiments", "post"),
                                      ("/api/experiments/{name}/{action}", "post"), ("/api/nodes", "get"),
                                      ("/api/nodes/register", "post")}:
        assert _params(_operation(schema, path, method))["experiment"]["in"] == "query", path


def test_a_model_download_is_documented_as_safetensors_and_as_json(schema):
    operation = _operation(schema, "/api/models/{version}/download", "get")
    content = operation["responses"]["200"]["content"]

    assert _params(operation)["format"]["in"] == "query" and "json" in _params(operation)["format"]["description"]
    assert content["application/octet-stream"]["schema"]["format"] == "binary"
    as_json = _resolve(schema, content["application/json"]["schema"])
    assert {"version", "sha256", "tensors", "parameters"} <= set(as_json["required"])
    assert as_json["properties"]["parameters"] == {"type": "array", "items": {"type": "number"}}


def test_the_round_metrics_export_is_documented_as_json_and_csv(schema):
    operation = _operation(schema, "/api/rounds", "get")
    content = operation["responses"]["200"]["content"]

    assert set(_params(operation)["format"]["schema"]["enum"]) == {"json", "csv"}
    assert content["text/csv"]["schema"]["type"] == "string"
    assert "rounds" in _resolve(schema, content["application/json"]["schema"])["required"]


def test_node_tokens_and_operators_are_security_schemes(schema):
    schemes = schema["components"]["securitySchemes"]

    assert schemes["nodeToken"] == {**schemes["nodeToken"], "type": "http", "scheme": "bearer"}
    assert schemes["basicAuth"]["scheme"] == "basic" and schemes["cookieAuth"]["in"] == "cookie"
    create = _operation(schema, "/api/experiments", "post")["security"]
    assert {"basicAuth": []} in create and {"cookieAuth": []} in create and {} not in create
    for path in ("/api/models/initial", "/api/models/{version}/evaluations", "/api/rounds/{number}/failures",
                 "/api/nodes/done"):
        assert _operation(schema, path, "post")["security"] == [{"nodeToken": []}]
    # Reads are open unless FL_LOGIN_REQUIRED; then a node's token or a login session.
    assert _operation(schema, "/api/rounds", "get")["security"] == [{"nodeToken": []}, {"cookieAuth": []}, {}]
    assert _operation(schema, "/status", "get")["security"] == [{}]


def test_request_bodies_of_nodes_and_operators_are_documented(schema):
    def body(path):
        content = _operation(schema, path, "post")["requestBody"]["content"]
        return {media: _resolve(schema, c["schema"]) for media, c in content.items()}

    assert set(body("/api/nodes/register")["application/json"]["properties"]) == {"node_id", "address", "data"}
    assert set(body("/api/models/{version}/evaluations")["application/json"]["required"]) == {"loss", "num_examples"}
    assert body("/api/rounds/{number}/failures")["application/json"]["required"] == ["reason"]
    assert body("/api/models/initial") == {"application/octet-stream": {"type": "string", "format": "binary"}}
    create = body("/api/experiments")["multipart/form-data"]
    assert create["properties"]["init"] == {"type": "string", "format": "binary",
                                            "description": create["properties"]["init"]["description"]}
    message = body("/message")["application/json"]
    assert {list(_resolve(schema, s)["properties"])[0] for s in message["oneOf"]} == {"UpdateModel", "RegisterNode"}


def test_the_schema_validates_with_no_warning(tmp_path):
    out = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    assert out.read_text().startswith("openapi: 3.")


@pytest.mark.parametrize("path", ["/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_swagger_ui_and_redoc_are_served_without_a_cdn(api, path):
    page = api.get(path)

    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html and "/api/schema/" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)
    script = re.search(r"/static/drf_spectacular_sidecar/[\w./-]+\.js", html).group(0)
    assert api.get(script).status_code == 200


@pytest.mark.parametrize("path", ["/api/schema/", "/api/schema/swagger-ui/", "/api/schema/redoc/"])
def test_the_schema_and_its_pages_are_behind_the_read_guard(api, settings, path):
    settings.FL_LOGIN_REQUIRED = True

    response = api.get(path)

    assert response.status_code == 401 and response.json()["error"] == "login_required"


def test_status_without_its_experiment_leaves_the_round_fields_out(api):
    body = api.get("/status?experiment=missing").json()

    assert body == {"status": "running", "message": "Server is active", "mode": "embedded", "experiment": None,
                    "detail": "There is no experiment named 'missing'."}
