"""JSON from clients: a body nested past the interpreter's recursion limit is a 400, not a RecursionError."""
import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

TOO_DEEP = "the JSON is nested too deeply"


def json_loads(data: str | bytes) -> Any:
    """json.loads, with nesting too deep for the parser reported as the ValueError it is."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 to `[[[[…` instead of letting a RecursionError become a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - {TOO_DEEP}.") from None
