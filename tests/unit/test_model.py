"""The shared MLP: gradients, parameter order, initialisation and training."""

import numpy as np
import pytest

from aggregation.fl.data import synthetic_regression
from aggregation.fl.model import (
    MLPSpec,
    flatten,
    forward,
    gradients,
    init_parameters,
    loss,
    train,
    unflatten,
)

DEFAULT = MLPSpec()
DEEP = MLPSpec((4, 5, 3, 2))


def numerical_gradient(spec, params, x, y, index, entry, eps=1e-6):
    plus = [p.copy() for p in params]
    minus = [p.copy() for p in params]
    plus[index][entry] += eps
    minus[index][entry] -= eps
    return (loss(spec, plus, x, y) - loss(spec, minus, x, y)) / (2 * eps)


@pytest.mark.parametrize(
    "spec", [DEFAULT, DEEP], ids=["one-hidden-layer", "two-hidden-layers"]
)
def test_gradients_match_central_differences_for_every_tensor(spec):
    # Prepare: float64 so the finite differences are accurate; biases nonzero so ReLUs vary.
    rng = np.random.default_rng(3)
    params = [p.astype(np.float64) for p in init_parameters(spec, seed=1)]
    params = [p + rng.normal(0, 0.1, p.shape) if p.ndim == 1 else p for p in params]
    x = rng.uniform(-1, 1, (7, spec.layers[0]))
    y = rng.uniform(-1, 1, (7, spec.layers[-1]))

    # Execute
    grads = gradients(spec, params, x, y)

    # Assert
    assert [g.shape for g in grads] == [p.shape for p in params]
    for index, p in enumerate(params):
        for flat in rng.choice(p.size, size=min(p.size, 5), replace=False):
            entry = np.unravel_index(flat, p.shape)
            expected = numerical_gradient(spec, params, x, y, index, entry)
            assert grads[index][entry] == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_loss_is_half_the_mean_squared_error_for_one_output():
    # Prepare
    params = init_parameters(DEFAULT, seed=0)
    x, y = synthetic_regression(seed=0, n=20)

    # Execute
    value = loss(DEFAULT, params, x, y)

    # Assert
    assert value == pytest.approx(
        0.5 * np.mean((forward(DEFAULT, params, x) - y) ** 2), rel=1e-6
    )


def test_flatten_uses_the_prototype_order_w1_row_major_then_b1_w2_b2():
    # Prepare: every entry holds a distinct, known value
    w1 = np.arange(640, dtype=np.float32).reshape(10, 64)
    b1 = np.arange(1000, 1064, dtype=np.float32)
    w2 = np.arange(2000, 2064, dtype=np.float32).reshape(64, 1)
    b2 = np.array([3000], dtype=np.float32)

    # Execute
    vec = flatten([w1, b1, w2, b2])

    # Assert
    assert vec.dtype == np.float32 and vec.shape == (769,)
    assert np.array_equal(vec[:640], np.arange(640))
    assert vec[1] == w1[0, 1] and vec[64] == w1[1, 0]
    assert np.array_equal(vec[640:704], b1)
    assert np.array_equal(vec[704:768], w2[:, 0])
    assert vec[768] == 3000


def test_unflatten_inverts_flatten():
    # Prepare
    params = init_parameters(DEEP, seed=5)

    # Execute
    restored = unflatten(DEEP, flatten(params))

    # Assert
    assert len(restored) == len(params)
    for got, want in zip(restored, params):
        assert got.dtype == np.float32
        assert np.array_equal(got, want)


def test_unflatten_rejects_a_vector_of_the_wrong_length():
    with pytest.raises(ValueError, match="expected 769 parameters, got 12"):
        unflatten(DEFAULT, np.zeros(12))


@pytest.mark.parametrize("values", [["0.5"] * 769, [None] * 769, [True] * 769])
def test_unflatten_rejects_values_that_are_not_numbers(values):
    with pytest.raises(ValueError, match="parameters must be numbers"):
        unflatten(DEFAULT, values)


def test_spec_describes_the_default_prototype_model():
    assert DEFAULT.names() == ["w1", "b1", "w2", "b2"]
    assert DEFAULT.shapes() == [(10, 64), (64,), (64, 1), (1,)]
    assert DEFAULT.num_params() == 769
    assert DEFAULT.to_dict() == {"kind": "mlp", "layers": [10, 64, 1]}
    assert MLPSpec.from_dict(DEEP.to_dict()) == DEEP


def test_init_is_reproducible_from_the_seed_and_differs_between_seeds():
    # Execute
    first, again, other = (init_parameters(DEFAULT, seed=s) for s in (7, 7, 8))

    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_init_respects_the_glorot_bound_and_zeroes_the_biases():
    # Execute
    params = init_parameters(DEEP, seed=0)

    # Assert
    for (fan_in, fan_out), w, b in zip(
        zip(DEEP.layers, DEEP.layers[1:]), params[::2], params[1::2]
    ):
        bound = np.sqrt(6 / (fan_in + fan_out))
        assert w.dtype == np.float32 and b.dtype == np.float32
        assert np.abs(w).max() <= bound
        assert (
            np.abs(w).max() > bound / 2
        )  # spread over the range, not squashed near zero
        assert not b.any()


def test_training_on_synthetic_regression_lowers_the_loss():
    # Prepare
    params = init_parameters(DEFAULT, seed=0)
    x, y = synthetic_regression(seed=1)
    before = loss(DEFAULT, params, x, y)

    # Execute
    trained, after = train(DEFAULT, params, x, y, epochs=50, learning_rate=0.05)

    # Assert
    assert after < before * 0.8
    assert after == pytest.approx(loss(DEFAULT, trained, x, y))
    assert all(p.dtype == np.float32 for p in trained)


def test_training_does_not_mutate_its_input_parameters():
    # Prepare
    params = init_parameters(DEFAULT, seed=0)
    snapshot = [p.copy() for p in params]
    x, y = synthetic_regression(seed=1)

    # Execute
    trained, _ = train(DEFAULT, params, x, y)

    # Assert
    assert all(np.array_equal(p, s) for p, s in zip(params, snapshot))
    assert not np.array_equal(trained[0], params[0])


def test_mini_batch_training_is_reproducible_from_its_seed():
    # Prepare
    params = init_parameters(DEFAULT, seed=0)
    x, y = synthetic_regression(seed=2, n=50)

    # Execute
    a, loss_a = train(DEFAULT, params, x, y, epochs=3, batch_size=8, seed=4)
    b, loss_b = train(DEFAULT, params, x, y, epochs=3, batch_size=8, seed=4)
    c, _ = train(DEFAULT, params, x, y, epochs=3, batch_size=8, seed=5)

    # Assert
    assert loss_a == loss_b
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_a_batch_size_of_at_least_n_is_full_batch_training():
    # Prepare
    params = init_parameters(DEFAULT, seed=0)
    x, y = synthetic_regression(seed=2, n=30)

    # Execute
    full, _ = train(DEFAULT, params, x, y, epochs=2)
    large, _ = train(DEFAULT, params, x, y, epochs=2, batch_size=30, seed=9)

    # Assert
    assert all(np.array_equal(p, q) for p, q in zip(full, large))


def test_synthetic_regression_targets_are_the_sum_of_the_first_three_features():
    # Execute
    x, y = synthetic_regression(seed=0, n=5)

    # Assert
    assert x.dtype == np.float32 and x.shape == (5, 10) and y.shape == (5, 1)
    assert np.all((x >= -1) & (x < 1))
    assert np.allclose(y[:, 0], x[:, 0] + x[:, 1] + x[:, 2])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"kind": "cnn", "layers": [10, 1]}, "unknown model kind"),
        ({"kind": "mlp", "layers": [10]}, "at least an input and an output layer"),
        ({"kind": "mlp", "layers": [10, 0, 1]}, "positive integers"),
        ({"kind": "mlp", "layers": [10, -3, 1]}, "positive integers"),
        ({"kind": "mlp", "layers": [10, 6.5, 1]}, "positive integers"),
        ({"kind": "mlp", "layers": [10, "64", 1]}, "positive integers"),
        ({"kind": "mlp", "layers": [10, True, 1]}, "positive integers"),
        ({"kind": "mlp", "layers": [100_000, 100_000, 1]}, "more than the limit"),
        ({"kind": "mlp"}, "needs 'layers'"),
        ({"kind": "mlp", "layers": [10, 1], "extra": 1}, "unexpected key"),
        ([10, 64, 1], "must be a JSON object"),
    ],
)
def test_spec_from_dict_rejects_bad_specs_with_a_sentence(bad, message):
    with pytest.raises(ValueError, match=message):
        MLPSpec.from_dict(bad)
