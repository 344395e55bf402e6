from django.urls import path

from aggregation import apis, apis_features, apis_models, prototype

urlpatterns = [
    path("status", apis.StatusApi.as_view(), name="status"),
    path("message", prototype.MessageApi.as_view(), name="message"),
    path("api/model/params", apis.ModelParamsApi.as_view(), name="model-params"),
    path("api/dashboard", apis.DashboardSnapshotApi.as_view(), name="dashboard-snapshot"),
    path("api/experiments", apis_models.ExperimentsApi.as_view(), name="experiments"),
    path("api/experiments/<slug:name>/<str:action>", apis_models.ExperimentActionApi.as_view(),
         name="experiment-action"),
    path("api/features", apis_features.FeaturesApi.as_view(), name="features"),
    path("api/rounds", apis.RoundListApi.as_view(), name="rounds"),
    path("api/rounds/current", apis.RoundCurrentApi.as_view(), name="round-current"),
    path("api/rounds/<int:number>", apis.RoundDetailApi.as_view(), name="round-detail"),
    path("api/rounds/<int:number>/updates", apis.UpdateSubmitApi.as_view(), name="update-submit"),
    path("api/rounds/<int:number>/failures", apis_models.RoundFailureApi.as_view(), name="round-failure"),
    path("api/models/initial", apis_models.ModelInitialApi.as_view(), name="model-initial"),
    path("api/models/<int:version>/evaluations", apis_models.EvaluationSubmitApi.as_view(), name="evaluation-submit"),
    path("api/models/<str:version>", apis.ModelVersionDetailApi.as_view(), name="model-detail"),
    path("api/models/<str:version>/download", apis.ModelVersionDownloadApi.as_view(), name="model-download"),
]
