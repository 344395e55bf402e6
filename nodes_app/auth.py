"""Who is calling: the node behind an `Authorization: Bearer <token>` header, as one DRF authentication class."""
from typing import Any

from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from nodes_app.models import Node
from nodes_app.tokens import token_hash

MISSING_TOKEN = "This call needs the node's token in an 'Authorization: Bearer <token>' header."
BAD_TOKEN = "The token is not valid for any registered node."


def bearer_token(request: HttpRequest | Request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def node_for_token(request: HttpRequest, token: str) -> Node | None:
    """The node holding `token`, looked up once per request: the read guard and the view share the answer."""
    if not hasattr(request, "_fl_node"):
        request._fl_node = Node.objects.filter(token_hash=token_hash(token)).first()  # type: ignore[attr-defined]
    return request._fl_node  # type: ignore[attr-defined]


class NodeUser:
    """The principal of a request made with a node's token: authenticated, never staff (nodes are not operators)."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, node: Node) -> None:
        self.node = node

    def __str__(self) -> str:
        return f"node {self.node.node_id}"


class NodeTokenAuthentication(BaseAuthentication):
    """A node's bearer token: no header is anonymous (the view's permission decides), a wrong one a 401.

    On success `request.auth` is the Node and `request.user` a NodeUser.
    """

    def authenticate(self, request: Request) -> tuple[NodeUser, Node] | None:
        token = bearer_token(request)
        if token is None:
            return None
        node = node_for_token(request._request, token)
        if node is None:
            raise exceptions.AuthenticationFailed(BAD_TOKEN)
        return NodeUser(node), node

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="fedsite"'


class IsNode(BasePermission):
    """Only an enrolled node; the refusal says how to authenticate (401 missing_token)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, Node):
            return True
        raise exceptions.NotAuthenticated(MISSING_TOKEN)


def request_node(request: Request) -> Node | None:
    """The node that authenticated this request, if any (views with NodeTokenAuthentication)."""
    return request.auth if isinstance(request.auth, Node) else None


def node_required(request: Request) -> Node:
    """The authenticated node, for a view where only some requests need one (the prototype's /message)."""
    node = request_node(request)
    if node is None:
        raise exceptions.NotAuthenticated(MISSING_TOKEN)
    return node
