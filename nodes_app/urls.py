from django.urls import path

from nodes_app import apis

urlpatterns = [
    path("api/nodes", apis.NodeListApi.as_view(), name="nodes"),
    path("api/nodes/register", apis.NodeRegisterApi.as_view(), name="node-register"),
    path("api/nodes/done", apis.NodeDoneApi.as_view(), name="node-done"),
]
