"""Update validation before aggregation: structure, dtype, finiteness and the optional norm bound."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.fl.validation import delta_norm, validate_update

CURRENT = [np.ones((2, 3), np.float32), np.zeros(3, np.float32)]
NAMES = ["w1", "b1"]


def moved(*b1):
    return [np.ones((2, 3), np.float32), np.array(b1, np.float32)]


def test_a_sound_update_passes_unchanged():
    params, reason = validate_update(moved(0.1, 0.2, 0.3), CURRENT, max_norm=1.0, mode="reject")

    assert reason is None
    assert np.array_equal(params[1], np.array([0.1, 0.2, 0.3], np.float32))


def test_a_float64_update_is_cast_to_the_model_dtype():
    params, reason = validate_update([np.ones((2, 3)), np.zeros(3)], CURRENT)

    assert reason is None and [p.dtype for p in params] == [np.float32, np.float32]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ([np.ones((2, 3), np.float32)], "the update has 1 tensors but the model has 2"),
        ([np.ones((3, 2), np.float32), np.zeros(3, np.float32)], r"tensor 'w1' has shape \(3, 2\) but the model's"),
        ([np.ones((2, 3), np.int64), np.zeros(3, np.float32)], "tensor 'w1' holds values of type int64"),
        ([np.ones((2, 3), np.float32), np.array(["a", "b", "c"])], "tensor 'b1' holds values of type <U1"),
        (moved(0.0, np.nan, 0.0), "tensor 'b1' contains NaN or infinity"),
        (moved(np.inf, 0.0, 0.0), "tensor 'b1' contains NaN or infinity"),
        ([np.ones((2, 3)), np.array([1e300, 0.0, 0.0])], "tensor 'b1' contains NaN or infinity"),
        ([np.ones((2, 3), np.float32), [[0.0, 1.0], [2.0]]], "tensor 'b1' is not an array of numbers"),
    ],
    ids=["count", "shape", "int-dtype", "strings", "nan", "inf", "float32-overflow", "ragged"],
)
def test_a_malformed_update_is_rejected_with_a_reason(params, reason):
    # Execute
    got, why = validate_update(params, CURRENT, names=NAMES)

    # Assert
    assert got is None
    assert why is not None and re.search(reason, why), why


def test_reasons_count_tensors_when_no_names_are_given():
    _, why = validate_update(moved(np.nan, 0.0, 0.0), CURRENT)

    assert why == "tensor 1 contains NaN or infinity"


def test_an_update_beyond_the_norm_bound_is_rejected_in_reject_mode():
    # ||(3, 4, 0)|| = 5 > 2
    params, why = validate_update(moved(3.0, 4.0, 0.0), CURRENT, max_norm=2.0, mode="reject")

    assert params is None
    assert why == "the update is 5 away from the current model (L2 norm of the difference), more than the limit of 2"


def test_an_update_beyond_the_norm_bound_is_pulled_back_in_clip_mode():
    # (3, 4, 0) scaled by 2 / 5
    params, why = validate_update(moved(3.0, 4.0, 0.0), CURRENT, max_norm=2.0, mode="clip")

    assert why is None
    np.testing.assert_allclose(params[1], [1.2, 1.6, 0.0], rtol=1e-6)
    assert np.array_equal(params[0], CURRENT[0])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    delta=st.lists(st.floats(-1e3, 1e3, width=32), min_size=3, max_size=3),
    max_norm=st.floats(1e-3, 1e3),
)
def test_clipped_updates_keep_their_direction_and_stay_within_the_bound(delta, max_norm):
    # Execute
    params, why = validate_update(moved(*delta), CURRENT, max_norm=max_norm, mode="clip")

    # Assert
    original = np.array(delta, np.float64)
    clipped = params[1].astype(np.float64)
    assert why is None
    assert delta_norm(params, CURRENT) <= max_norm * (1 + 1e-6) + 1e-6
    if np.linalg.norm(original) > max_norm:
        # collinear with the original difference, pointing the same way
        np.testing.assert_allclose(clipped * np.linalg.norm(original), original * np.linalg.norm(clipped),
                                   rtol=1e-4, atol=1e-3)
    else:
        assert np.array_equal(clipped, original.astype(np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "drop"}, "mode must be one of 'reject', 'clip', got 'drop'"),
        ({"max_norm": 0}, "max_norm must be a positive number, got 0"),
        ({"max_norm": float("inf")}, "max_norm must be a positive number, got inf"),
    ],
)
def test_bad_settings_are_a_value_error_not_a_rejected_update(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_update(CURRENT, CURRENT, **kwargs)


def test_delta_norm_is_the_l2_norm_over_all_tensors():
    params = [np.full((2, 3), 2.0, np.float32), np.array([0.0, 0.0, 2.0], np.float32)]

    # six entries differ by 1 and one by 2: sqrt(6 + 4)
    assert delta_norm(params, CURRENT) == pytest.approx(np.sqrt(10.0))
