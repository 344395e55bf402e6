"""URL map: prototype endpoints at the root, the JSON API under /api/, admin and dashboard."""
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from aggregation.metrics import metrics_view
from aggregation.views import dashboard
from fedsite.errors import error_response
from fedsite.throttle import admin_login

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("admin/login/", admin_login, name="admin-login-throttled"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    # The contract, under the read guard like every GET (see fedsite/readguard.py); the UIs' assets are in /static/.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema/swagger-ui/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", include("aggregation.urls")),
    path("", include("nodes_app.urls")),
]


@csrf_exempt  # the answer is the same for every method; a POST without a CSRF cookie must not get a 403 page
def not_found(request: HttpRequest) -> JsonResponse:
    return error_response("not_found", f"There is nothing at {request.path}.", 404)


# Last: unknown paths get a JSON 404 in every mode, not Django's HTML debug page.
urlpatterns.append(re_path(r"^(?!admin|static/).*$", not_found))


def handler500(request: HttpRequest) -> JsonResponse:
    return error_response("server_error", "The server failed to handle this request; it has been logged.", 500)
