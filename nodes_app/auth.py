"""Who is calling: the node behind an `Authorization: Bearer <token>` header."""
from django.http import HttpRequest

from fedsite.errors import ApplicationError
from nodes_app.models import Node
from nodes_app.services import token_hash


def bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def node_from_request(request: HttpRequest, *, required: bool = True) -> Node | None:
    token = bearer_token(request)
    if token is None:
        if required:
            raise ApplicationError(
                "missing_token", "This call needs the node's token in an 'Authorization: Bearer <token>' header.", 401
            )
        return None
    # The read guard may have looked the token up already for this request: one query, not two.
    node = getattr(request, "_fl_node", None) or Node.objects.filter(token_hash=token_hash(token)).first()
    request._fl_node = node  # type: ignore[attr-defined]
    if node is None:
        raise ApplicationError("bad_token", "The token is not valid for any registered node.", 401)
    return node
