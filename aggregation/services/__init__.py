"""Services write: every change of the federation's state goes through one of these functions."""
from aggregation.services.experiments import experiment_default_get_or_create, experiment_spec
from aggregation.services.rounds import round_aggregate, round_open
from aggregation.services.sweep import rounds_sweep
from aggregation.services.updates import ParsedUpdate, round_base_parameters, round_unknown, update_submit

__all__ = [
    "ParsedUpdate",
    "experiment_default_get_or_create",
    "experiment_spec",
    "round_aggregate",
    "round_base_parameters",
    "round_unknown",
    "round_open",
    "rounds_sweep",
    "update_submit",
]
