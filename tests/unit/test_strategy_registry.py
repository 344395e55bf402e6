"""Every strategy is selectable by name with JSON hyperparameters, validated with a sentence."""

import inspect
import json
import re

import numpy as np
import pytest

from aggregation.fl.registry import STRATEGIES, strategy_create

STATELESS = ["fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"]


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_builds_from_its_name_and_cites_its_paper(name):
    # Execute
    strategy = strategy_create(name, json.loads("{}"))

    # Assert: keyword-only hyperparameters, a docstring naming a paper and its year
    cls = STRATEGIES[name]
    assert type(strategy) is cls
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert parameters and all(p.kind is p.KEYWORD_ONLY for p in parameters)
    assert re.search(r"\"[^\"]+\".*(19|20)\d\d", cls.__doc__, re.S), cls.__doc__
    assert name in repr(strategy).lower()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedtrimmedavg", {"beta": 0.5}, r"beta must be a number in \[0, 0.5\), got 0.5"),
        ("krum", {"num_malicious": -1}, "num_malicious must be a non-negative integer, got -1"),
        ("krum", {"num_malicious": 1.5}, "num_malicious must be a non-negative integer, got 1.5"),
        ("multikrum", {"num_to_keep": 0}, "num_to_keep must be a positive integer, got 0"),
        ("bulyan", {"num_malicious": "2"}, "num_malicious must be a non-negative integer, got '2'"),
        ("fedprox", {"proximal_mu": None}, "proximal_mu must be a non-negative number, got None"),
        ("fedmedian", {"beta": 0.1}, "'fedmedian' does not accept parameter.*'beta'; it accepts: min_results, dp"),
        ("fedadagrad", {"beta_2": 0.9}, "'beta_2'; it accepts: min_results, eta, eta_l, beta_1, tau, dp"),
    ],
)
def test_bad_hyperparameters_are_refused_with_a_sentence(name, params, message):
    with pytest.raises(ValueError, match=message):
        strategy_create(name, params)


def test_unknown_names_list_every_choice():
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'; choose one of: " + ", ".join(STRATEGIES)):
        strategy_create("fedsgd")


@pytest.mark.parametrize("name", STATELESS)
def test_stateless_strategies_save_nothing_and_refuse_a_state_meant_for_another(name):
    # Prepare
    strategy = strategy_create(name)

    # Execute
    strategy.load_state({})

    # Assert
    assert strategy.state_dict() == {}
    with pytest.raises(ValueError, match=f"strategy '{name}' keeps no state, but the saved state holds m.0"):
        strategy.load_state({"m.0": np.zeros(2)})
