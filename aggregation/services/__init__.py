"""Services write: every change of the federation's state goes through a function of one of these modules.

Import them from their modules (aggregation.services.updates, .rounds...): this package imports none of
them, so importing one never loads the others (the aggregation task imports rounds; handover imports it).
"""
# The dashboard still reads the model spec from here; it is a selector now (aggregation.selectors).
from aggregation.selectors import experiment_spec

__all__ = ["experiment_spec"]
