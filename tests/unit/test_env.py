"""Strict environment helpers: junk in a variable stops the start with a sentence naming it."""
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from fedsite.env import envbool, envchoice, envfloat, envint


@pytest.mark.parametrize(("helper", "raw"), [(envbool, "maybe"), (envint, "3.5"), (envint, "-1"), (envfloat, "nan"),
                                             (envfloat, "inf"), (envfloat, "soon"), (envchoice, "sometimes")])
def test_env_helpers_refuse_junk_naming_the_variable(monkeypatch, helper, raw):
    monkeypatch.setenv("FL_TEST_VALUE", raw)
    args = {envbool: (False,), envint: (1, 0), envfloat: (1.0, 0.0), envchoice: ("fail", ("fail", "extend"))}[helper]

    with pytest.raises(ImproperlyConfigured, match="FL_TEST_VALUE"):
        helper("FL_TEST_VALUE", *args)


def test_env_helpers_read_good_values_and_defaults(monkeypatch):
    monkeypatch.setenv("FL_A", "yes")
    monkeypatch.setenv("FL_B", "7")
    monkeypatch.setenv("FL_C", "0.5")

    assert envbool("FL_A") is True and envint("FL_B", 1) == 7 and envfloat("FL_C", 1.0) == 0.5
    assert envint("FL_UNSET_FOR_TEST", 3) == 3


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_every_fedsite_process_defaults_to_one_blas_thread_unless_told(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    script = "import os, fedsite; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected, "1"]
