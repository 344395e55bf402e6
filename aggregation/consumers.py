"""The dashboard's websocket: a snapshot on connect, then every committed event. Read-only."""
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from aggregation.events import DASHBOARD_GROUP
from aggregation.selectors import dashboard_snapshot


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        snapshot = await database_sync_to_async(dashboard_snapshot)()
        await self.send_json({"event": "snapshot", "data": snapshot})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(DASHBOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Clients only listen; anything they send is ignored."""

    async def fl_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"event": message["event"], "experiment": message["experiment"],
                              "data": message["data"]})
