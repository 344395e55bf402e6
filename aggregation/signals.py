"""After `migrate`, the default experiment exists, so the first request never has to create it."""
from typing import Any


def create_default_experiment(sender: Any, **kwargs: Any) -> None:
    from django.conf import settings

    from aggregation.services.experiments import experiment_default_get_or_create

    if settings.FL_CREATE_DEFAULT_EXPERIMENT:
        experiment_default_get_or_create()
