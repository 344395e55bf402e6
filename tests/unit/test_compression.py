"""fp16 and int8 delta uploads (fl.compression): error bounds of a round trip, the wire format, and refusals."""

import json

import numpy as np
import pytest

from aggregation.fl.compression import int8_quantize, update_decode, update_encode
from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import SerdeError, dumps, loads, params_dumps

SPEC = MLPSpec((10, 64, 1))
META = {"num_examples": "12", "metrics": json.dumps({"loss": 0.5})}


def base_and_update(step: float = 0.01, seed: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A base model and a trained-looking update: the base moved by small random steps."""
    rng = np.random.default_rng(seed)
    base = init_parameters(SPEC, seed)
    update = [(p + rng.normal(0, step, p.shape)).astype(np.float32) for p in base]
    return base, update


def int8_body(levels: dict[str, np.ndarray], scales: dict[str, np.ndarray]) -> bytes:
    tensors = {}
    for name in SPEC.names():
        tensors[name] = levels[name]
        tensors[f"{name}.scale"] = scales[name]
    return dumps(tensors, {**META, "encoding": "int8-delta"})


def valid_int8_parts() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    levels = {n: np.ones(s, dtype=np.int8) for n, s in zip(SPEC.names(), SPEC.shapes())}
    scales = {n: np.array(0.01, dtype=np.float32) for n in SPEC.names()}
    return levels, scales


def test_fp16_round_trip_is_within_fp16_relative_error_of_the_delta():
    # Prepare
    base, update = base_and_update()

    # Execute
    body = update_encode(SPEC, update, base, "fp16", META)
    decoded, metadata = update_decode(SPEC, body, base)

    # Assert: half precision keeps 11 significant bits of each delta (below fp16's normal range, 2^-25 absolute)
    for got, new, old in zip(decoded, update, base):
        assert got.dtype == np.float32 and got.shape == new.shape
        delta = new.astype(np.float64) - old
        err = np.abs(got.astype(np.float64) - new)
        slack = 2 * np.finfo(np.float32).eps * np.maximum(np.abs(new), np.abs(old))  # float32 add/subtract
        assert (err <= 2.0**-11 * np.abs(delta) + 2.0**-25 + slack).all()
    assert metadata == {**META, "encoding": "fp16-delta"}


def test_int8_round_trip_is_within_half_a_step_per_element():
    # Prepare
    base, update = base_and_update()

    # Execute
    body = update_encode(SPEC, update, base, "int8", META)
    decoded, metadata = update_decode(SPEC, body, base)

    # Assert: every element is within scale/2 of the update, scale = max|delta| / 127 of its tensor
    tensors, _ = loads(body)
    for name, got, new, old in zip(SPEC.names(), decoded, update, base):
        delta = new.astype(np.float64) - old
        scale = float(tensors[f"{name}.scale"])
        assert scale == pytest.approx(np.abs(delta).max() / 127, rel=1e-6)
        slack = 2 * np.finfo(np.float32).eps * np.maximum(np.abs(new), np.abs(old))
        assert (np.abs(got.astype(np.float64) - new) <= scale / 2 * (1 + 1e-6) + slack).all()
    assert metadata["encoding"] == "int8-delta" and metadata["num_examples"] == "12"


def test_the_wire_format_is_f16_or_i8_with_an_f32_scale_and_about_one_or_two_bytes_per_parameter():
    # Prepare
    base, update = base_and_update()
    big = MLPSpec((64, 256, 10), "classification")
    big_base = init_parameters(big, 1)
    big_update = [p + np.float32(0.01) for p in big_base]

    # Execute
    fp16 = update_encode(SPEC, update, base, "fp16", META)
    int8 = update_encode(SPEC, update, base, "int8", META)
    sizes = {e: len(update_encode(big, big_update, big_base, e, META)) / big.num_params()
             for e in ("none", "fp16", "int8")}

    # Assert
    fp16_tensors, _ = loads(fp16)
    int8_tensors, _ = loads(int8)
    assert {t.dtype for t in fp16_tensors.values()} == {np.dtype(np.float16)}
    assert list(int8_tensors) == ["w1", "w1.scale", "b1", "b1.scale", "w2", "w2.scale", "b2", "b2.scale"]
    assert {int8_tensors[n].dtype for n in SPEC.names()} == {np.dtype(np.int8)}
    assert all(int8_tensors[f"{n}.scale"].dtype == np.float32 and int8_tensors[f"{n}.scale"].shape == ()
               for n in SPEC.names())
    n = SPEC.num_params()
    assert 2 * n < len(fp16) < 2 * n + 400 and n < len(int8) < n + 700  # data plus a JSON header
    assert 4 < sizes["none"] < 4.03 and 2 < sizes["fp16"] < 2.03 and 1 < sizes["int8"] < 1.05


def test_none_is_the_plain_float32_upload_and_decodes_without_reading_the_base():
    # Prepare
    base, update = base_and_update()

    def no_base():
        raise AssertionError("a float32 upload must not need the base model")

    # Execute
    body = update_encode(SPEC, update, base, "none", META)
    decoded, metadata = update_decode(SPEC, body, no_base)

    # Assert
    assert body == params_dumps(SPEC, update, META)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, update)) and metadata == META


def test_a_body_that_names_its_encoding_none_is_plain_float32():
    base, update = base_and_update()

    decoded, _ = update_decode(SPEC, params_dumps(SPEC, update, {**META, "encoding": "none"}), base)

    assert all(np.array_equal(a, b) for a, b in zip(decoded, update))


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
def test_an_unchanged_tensor_decodes_to_the_base_exactly(encoding):
    # Prepare: w1 and b2 do not move (int8: scale 0)
    base, update = base_and_update()
    update[0], update[3] = base[0].copy(), base[3].copy()

    # Execute
    body = update_encode(SPEC, update, base, encoding, META)
    decoded, _ = update_decode(SPEC, body, base)

    # Assert
    assert np.array_equal(decoded[0], base[0]) and np.array_equal(decoded[3], base[3])
    if encoding == "int8":
        assert float(loads(body)[0]["w1.scale"]) == 0.0


def test_int8_quantize_uses_the_symmetric_range_and_rounds_to_nearest():
    # Execute
    levels, scale = int8_quantize(np.array([-2.0, -0.5, 0.0, 0.01, 2.0], dtype=np.float32))

    # Assert
    assert scale == np.float32(2.0 / 127)
    assert levels.tolist() == [-127, -32, 0, 1, 127]


def test_the_base_is_read_lazily_only_for_a_delta_body():
    # Prepare
    base, update = base_and_update()
    calls = []

    # Execute
    update_decode(SPEC, update_encode(SPEC, update, base, "int8"), lambda: calls.append(1) or base)

    # Assert
    assert calls == [1]


@pytest.mark.parametrize(("encoding", "problem"), [
    ("bf16", "the update encoding 'bf16' is unknown"),
    ("fp16", "tensor 'w1' moved by more than 65504, beyond fp16's range"),
])
def test_encoding_refuses_what_it_cannot_represent(encoding, problem):
    # Prepare
    base, update = base_and_update()
    update[0] = update[0] + 1e5

    # Execute / Assert
    with pytest.raises(SerdeError, match=problem):
        update_encode(SPEC, update, base, encoding)


def test_encoding_refuses_non_finite_parameters_and_a_base_of_another_model():
    # Prepare
    base, update = base_and_update()
    update[1] = update[1].copy()
    update[1][0] = np.nan

    # Execute / Assert
    with pytest.raises(SerdeError, match="tensor 'b1' of the update contains NaN or infinity"):
        update_encode(SPEC, update, base, "int8")
    with pytest.raises(SerdeError, match="the model has 4 tensors .* but the base model has 2"):
        update_encode(SPEC, base_and_update()[1], base[:2], "fp16")


def _bad_int8_bodies() -> dict[str, tuple[bytes, str]]:
    cases = {}
    levels, scales = valid_int8_parts()
    cases["nan scale"] = (int8_body(levels, {**scales, "b1": np.array(np.nan, dtype=np.float32)}),
                          "tensor 'b1.scale' is nan, but a scale must be a finite number")
    cases["negative scale"] = (int8_body(levels, {**scales, "w2": np.array(-1.0, dtype=np.float32)}),
                               "a scale must be a finite number of at least 0")
    cases["f64 scale"] = (int8_body(levels, {**scales, "w1": np.array(0.1)}),
                          "tensor 'w1.scale' must be one float32 number")
    cases["two scales"] = (int8_body(levels, {**scales, "w1": np.ones(2, dtype=np.float32)}),
                           "tensor 'w1.scale' must be one float32 number")
    cases["f32 values"] = (int8_body({**levels, "w1": np.ones((10, 64), dtype=np.float32)}, scales),
                           "tensor 'w1' holds float32 values, but a int8-delta update stores int8")
    cases["wrong shape"] = (int8_body({**levels, "w1": np.ones((64, 10), dtype=np.int8)}, scales),
                            r"tensor 'w1' has shape \[64, 10\] but the model expects \[10, 64\]")
    cases["-128"] = (int8_body({**levels, "b2": np.array([-128], dtype=np.int8)}, scales),
                     "int8-delta values lie in -127..127")
    cases["overflow"] = (int8_body({**levels, "w1": np.full((10, 64), 127, dtype=np.int8)},
                                   {**scales, "w1": np.array(3e38, dtype=np.float32)}),
                         "tensor 'w1' decodes to NaN or infinity")
    no_scale = {n: levels[n] for n in SPEC.names()}
    cases["no scales"] = (dumps(no_scale, {**META, "encoding": "int8-delta"}), "missing 'w1.scale'")
    return cases


@pytest.mark.parametrize("case", sorted(_bad_int8_bodies()))
def test_a_malformed_int8_body_is_refused_with_a_sentence(case):
    # Prepare
    body, problem = _bad_int8_bodies()[case]
    base = init_parameters(SPEC, 0)

    # Execute / Assert
    with pytest.raises(SerdeError, match=problem):
        update_decode(SPEC, body, base)


@pytest.mark.parametrize(("tensors", "encoding", "problem"), [
    ({"w1": np.ones((10, 64), dtype=np.float32)}, "fp16-delta", "tensor 'w1' holds float32 values, but a "
                                                                "fp16-delta update stores float16"),
    ({"w1": np.array(np.inf, dtype=np.float16)}, "fp16-delta", r"shape \[\] but the model expects \[10, 64\]"),
    ({}, "zstd-delta", "declares encoding 'zstd-delta', which this server cannot read"),
])
def test_a_malformed_fp16_body_or_an_unknown_encoding_is_refused(tensors, encoding, problem):
    # Prepare: every other tensor is a valid fp16 delta
    valid = {n: np.zeros(s, dtype=np.float16) for n, s in zip(SPEC.names(), SPEC.shapes())}
    body = dumps({**valid, **tensors}, {**META, "encoding": encoding})

    # Execute / Assert
    with pytest.raises(SerdeError, match=problem):
        update_decode(SPEC, body, init_parameters(SPEC, 0))


def test_an_infinite_fp16_delta_is_refused():
    # Prepare
    tensors = {n: np.zeros(s, dtype=np.float16) for n, s in zip(SPEC.names(), SPEC.shapes())}
    tensors["b1"][5] = np.inf

    # Execute / Assert
    with pytest.raises(SerdeError, match="tensor 'b1' decodes to NaN or infinity"):
        update_decode(SPEC, dumps(tensors, {"encoding": "fp16-delta"}), init_parameters(SPEC, 0))
