"""`python manage.py createnode --id N`: issue a node's token from the command line."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fedsite.errors import ApplicationError
from nodes_app.services import node_issue_token


class Command(BaseCommand):
    help = "Create a node and print its token (shown once), or give an existing node a new token with --rotate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", required=True, dest="node_id", help="The node's id.")
        parser.add_argument("--address", default="", help="The node's own base URL (optional).")
        parser.add_argument("--rotate", action="store_true", help="Replace the token of an existing node.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            node, token = node_issue_token(options["node_id"], address=options["address"], rotate=options["rotate"])
        except ApplicationError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(token)
        self.stderr.write(f"token for node {node.node_id} (store it in the node's state dir as 'token')")
