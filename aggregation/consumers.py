"""The dashboard's websocket: a snapshot on connect, then every committed event. Read-only."""
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from aggregation.dashboard import dashboard_access_allowed, dashboard_snapshot
from aggregation.events import DASHBOARD_GROUP
from fedsite.errors import ApplicationError

# Application close code (4000-4999) for "log in first"; the page shows a login link.
CLOSE_LOGIN_REQUIRED = 4403


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        # Without AuthMiddlewareStack there is no "user" in the scope: a required login then always fails.
        if not dashboard_access_allowed(self.scope.get("user")):
            await self.close(code=CLOSE_LOGIN_REQUIRED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.experiment_name = (query.get("experiment") or [None])[0] or None
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        try:
            snapshot = await database_sync_to_async(dashboard_snapshot)(self.experiment_name)
        except ApplicationError as exc:  # no such experiment (yet): say so, and keep listening for events
            await self.send_json({"event": "error", "data": exc.as_dict()})
            return
        await self.send_json({"event": "snapshot", "data": snapshot})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen; anything they send is ignored."""

    async def fl_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"event": message["event"], "experiment": message["experiment"],
                              "data": message["data"]})
