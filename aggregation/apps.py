from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AggregationConfig(AppConfig):
    name = "aggregation"
    verbose_name = "Federated learning"

    def ready(self) -> None:
        from aggregation.signals import create_default_experiment

        post_migrate.connect(create_default_experiment, sender=self)
        from aggregation.metrics import collector_register

        collector_register()
