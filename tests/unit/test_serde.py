"""The hand-written safetensors codec: round trips, interop with the reference library, and refusals."""

import json

import numpy as np
import pytest
import safetensors.numpy as reference

from aggregation.fl.model import MLPSpec, init_parameters
from aggregation.fl.serde import (
    SerdeError,
    all_float32,
    check_finite,
    dumps,
    loads,
    params_dumps,
    params_loads,
    params_sha256,
    sha256_hex,
)

SPEC = MLPSpec()


def sample_tensors():
    rng = np.random.default_rng(0)
    return {
        "w1": rng.normal(size=(3, 4)).astype(np.float32),
        "f64": rng.normal(size=(2,)),
        "f16": np.array([1.5, -2.0], dtype=np.float16),
        "i64": np.array([[-(2**40), 7]], dtype=np.int64),
        "i32": np.array([-5], dtype=np.int32),
        "i16": np.array([300], dtype=np.int16),
        "i8": np.array([-1, 2], dtype=np.int8),
        "u8": np.array([255], dtype=np.uint8),
        "mask": np.array([True, False, True]),
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def raw(header, data=b""):
    """Hand-build a safetensors buffer, so malformed inputs can be made on purpose."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + data


def assert_same(got, want):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        assert np.array_equal(got[name], want[name]), name


def test_dumps_then_loads_returns_the_same_tensors_in_order():
    # Prepare
    tensors = sample_tensors()

    # Execute
    buf = dumps(tensors)
    decoded, metadata = loads(buf)

    # Assert
    assert_same(decoded, tensors)
    assert metadata == {}
    assert int.from_bytes(buf[:8], "little") % 8 == 0


def test_the_reference_library_reads_our_bytes():
    # Prepare
    tensors = sample_tensors()

    # Execute
    decoded = reference.load(dumps(tensors, {"round": "3"}))

    # Assert
    assert sorted(decoded) == sorted(tensors)
    for name, want in tensors.items():
        assert decoded[name].dtype == want.dtype and np.array_equal(
            decoded[name], want
        ), name


def test_we_read_the_reference_librarys_bytes_and_metadata():
    # Prepare
    tensors = sample_tensors()
    buf = reference.save(tensors, metadata={"round": "3", "node": "n1"})

    # Execute
    decoded, metadata = loads(buf)

    # Assert
    assert sorted(decoded) == sorted(tensors)
    for name, want in tensors.items():
        assert decoded[name].dtype == want.dtype and np.array_equal(
            decoded[name], want
        ), name
    assert metadata == {"round": "3", "node": "n1"}


def test_non_contiguous_and_big_endian_arrays_are_written_as_little_endian_c_order():
    # Prepare
    base = np.arange(12, dtype=">f4").reshape(3, 4)

    # Execute
    decoded, _ = loads(dumps({"t": base.T}))

    # Assert
    assert decoded["t"].dtype == np.dtype("<f4")
    assert np.array_equal(decoded["t"], base.T)


def test_metadata_survives_a_round_trip():
    buf = dumps({"x": np.zeros(1, np.float32)}, metadata={"model": "mlp", "sha": "é"})

    assert loads(buf)[1] == {"model": "mlp", "sha": "é"}


def test_header_padding_with_trailing_spaces_is_accepted():
    header = (
        json.dumps(
            {"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}
        ).encode()
        + b"      "
    )

    tensors, _ = loads(raw(header, b"\x01\x02"))

    assert tensors["x"].tolist() == [1, 2]


F32_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"\x01\x02\x03", "only 3 bytes long"),
        ((1000).to_bytes(8, "little") + b"{}", "only 2 bytes follow"),
        ((2**40).to_bytes(8, "little"), "more than the limit"),
        (raw(b"{not json"), "not valid JSON"),
        (raw(b'{"x": "\xff"}'), "not valid UTF-8"),
        (raw([1, 2]), "must be a JSON object"),
        (raw(b'{"x": {}, "x": {}}'), "names 'x' twice"),
        (
            raw({"x": {**F32_ENTRY, "dtype": "Q7"}}, bytes(8)),
            "dtype 'Q7', which is not supported",
        ),
        (
            raw({"x": {**F32_ENTRY, "shape": [-2]}}, bytes(8)),
            "not a list of non-negative integers",
        ),
        (
            raw({"x": {**F32_ENTRY, "shape": "2"}}, bytes(8)),
            "not a list of non-negative integers",
        ),
        (
            raw({"x": {**F32_ENTRY, "data_offsets": [0, 8.0]}}, bytes(8)),
            "not a pair of non-negative integers",
        ),
        (
            raw({"x": {**F32_ENTRY, "data_offsets": [0, 900]}}, bytes(512)),
            "ends at byte 900 but the data is only 512",
        ),
        (
            raw({"x": {**F32_ENTRY, "data_offsets": [0, 12]}}, bytes(12)),
            "needs 8 bytes, but its offsets span 12",
        ),
        (
            raw(
                {"x": F32_ENTRY, "y": {**F32_ENTRY, "data_offsets": [4, 12]}}, bytes(12)
            ),
            "'x' and 'y' overlap",
        ),
        (
            raw({"x": {**F32_ENTRY, "data_offsets": [4, 12]}}, bytes(12)),
            "unused bytes 0 to 4",
        ),
        (raw({"x": F32_ENTRY}, bytes(9)), "the tensors only account for 8"),
        (raw({"x": {"dtype": "F32"}}), "lacks shape, data_offsets"),
        (raw({"__metadata__": {"k": 1}}), "metadata must map strings to strings"),
    ],
    ids=[
        "truncated",
        "header-beyond-buffer",
        "absurd-header-length",
        "bad-json",
        "bad-utf8",
        "header-not-object",
        "duplicate-name",
        "unknown-dtype",
        "negative-dimension",
        "shape-not-list",
        "float-offset",
        "offsets-out-of-bounds",
        "byte-count-mismatch",
        "overlapping-offsets",
        "gap-before-tensor",
        "trailing-bytes",
        "missing-keys",
        "non-string-metadata",
    ],
)
def test_loads_rejects_malformed_input_with_a_sentence(buf, message):
    with pytest.raises(SerdeError, match=message):
        loads(buf)


def test_params_round_trip_as_float32_in_spec_order():
    # Prepare
    params = init_parameters(SPEC, seed=0)

    # Execute
    decoded, metadata = params_loads(SPEC, params_dumps(SPEC, params, {"version": "1"}))

    # Assert
    assert metadata == {"version": "1"}
    assert [p.dtype for p in decoded] == [np.float32] * 4
    assert all(np.array_equal(a, b) for a, b in zip(decoded, params))


def test_params_loads_casts_other_float_types_to_float32():
    tensors = dict(
        zip(SPEC.names(), (p.astype(np.float64) for p in init_parameters(SPEC, seed=0)))
    )

    decoded, _ = params_loads(SPEC, dumps(tensors))

    assert all(p.dtype == np.float32 for p in decoded)


def test_params_loads_leaves_out_of_range_values_to_check_finite():
    # Prepare
    tensors = dict(
        zip(SPEC.names(), (p.astype(np.float64) for p in init_parameters(SPEC, seed=0)))
    )
    tensors["b2"] = np.array([1e300])

    # Execute
    decoded, _ = params_loads(SPEC, dumps(tensors))

    # Assert
    with pytest.raises(SerdeError, match="tensor 'b2' contains NaN or infinity"):
        check_finite(decoded, SPEC.names())


def test_params_loads_names_missing_and_unexpected_tensors():
    # Prepare
    tensors = dict(zip(SPEC.names(), init_parameters(SPEC, seed=0)))
    del tensors["b2"]
    tensors["w3"] = np.zeros(1, np.float32)

    # Execute / Assert
    with pytest.raises(SerdeError, match=r"missing 'b2'; unexpected 'w3'"):
        params_loads(SPEC, dumps(tensors))


def test_params_loads_names_a_tensor_with_the_wrong_shape():
    tensors = dict(zip(SPEC.names(), init_parameters(SPEC, seed=0)))
    tensors["w1"] = np.zeros((10, 32), np.float32)

    with pytest.raises(
        SerdeError,
        match=r"tensor 'w1' has shape \[10, 32\] but the model expects \[10, 64\]",
    ):
        params_loads(SPEC, dumps(tensors))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_tensor_holding_nan_or_infinity(bad):
    # Prepare
    params = init_parameters(SPEC, seed=0)
    params[1][5] = bad

    # Execute / Assert
    with pytest.raises(SerdeError, match="tensor 'b1' contains NaN or infinity"):
        check_finite(params, SPEC.names())


def test_check_finite_accepts_finite_parameters():
    check_finite(init_parameters(SPEC, seed=0), SPEC.names())


def test_sha256_hex_is_the_hex_digest_of_the_bytes():
    assert (
        sha256_hex(b"abc")
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_params_sha256_is_the_digest_of_the_canonical_encoding_without_building_it():
    spec = MLPSpec((5, 4, 2))
    params = init_parameters(spec, 3)
    as_float64 = [p.astype(np.float64) for p in params]

    assert params_sha256(spec, params) == sha256_hex(params_dumps(spec, params))
    assert params_sha256(spec, as_float64) == sha256_hex(params_dumps(spec, params))
    moved = [p.copy() for p in params]
    moved[-1][0] += 1
    assert params_sha256(spec, moved) != params_sha256(spec, params)


def test_all_float32_reads_the_dtypes_from_the_header():
    spec = MLPSpec((5, 4, 2))
    params = init_parameters(spec, 3)

    assert all_float32(params_dumps(spec, params, {"num_examples": "3"}))
    assert not all_float32(dumps({"w": np.zeros(3, np.float64), "b": np.zeros(2, np.float32)}))
    assert not all_float32(dumps({"w": np.zeros(3, np.float16)}))
