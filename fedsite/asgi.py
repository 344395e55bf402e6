"""ASGI entry point: HTTP through Django, websockets through Channels; `runserver` serves it with uvicorn.

Every HTTP request passes fedsite.webserver.BodyLimits first, whichever ASGI server runs this.
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fedsite.settings")
# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from aggregation.routing import websocket_urlpatterns  # noqa: E402
from fedsite.webserver import BodyLimits  # noqa: E402

application = ProtocolTypeRouter({
    "http": BodyLimits(django_asgi_app),
    # The session's user in the scope, for FL_DASHBOARD_LOGIN_REQUIRED.
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})

from aggregation.startup import server_started  # noqa: E402

server_started()
