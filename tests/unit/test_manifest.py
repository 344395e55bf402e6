"""A model as named tensors: manifest validation, its JSON form, and reading a user's initial weights file."""

import json

import numpy as np
import pytest
import safetensors.numpy as reference

from aggregation.fl.initfile import initial_model_loads
from aggregation.fl.manifest import Manifest, TensorSpec, manifest_of, name_problem, spec_from_dict
from aggregation.fl.model import MLPSpec
from aggregation.fl.serde import SerdeError, dtype_names, dumps, loads, params_from_tensors

CNN = Manifest((TensorSpec("conv.weight", (8, 1, 3, 3)), TensorSpec("conv.bias", (8,), "F16"),
                TensorSpec("fc.weight", (10, 72)), TensorSpec("fc.bias", (10,), "BF16")))


def t(name, shape=(1,), dtype="F32"):
    return TensorSpec(name, shape, dtype)


@pytest.mark.parametrize(("tensors", "sentence"), [
    ((), "a model needs at least one tensor"),
    ((t("a"), t("a", (2,))), "tensor name 'a' appears twice"),
    ((t(""),), "tensor names must be non-empty strings, got ''"),
    ((t(None),), "tensor names must be non-empty strings, got None"),
    ((t(" a"),), "tensor name ' a' has leading/trailing space or control characters"),
    ((t("a\u200bb"),), r"tensor name 'a\\u200bb' has leading/trailing space or control characters"),
    ((t("__metadata__"),), "'__metadata__' is reserved and cannot name a tensor"),
    ((t("x" * 201),), "is longer than 200 characters"),
    ((t("a", (-1,)),), r"tensor 'a' has shape \[-1\], not a list of non-negative integers"),
    ((t("a", (True,)),), r"tensor 'a' has shape \[True\], not a list of non-negative integers"),
    ((t("a", (2.0,)),), r"tensor 'a' has shape \[2.0\], not a list of non-negative integers"),
    ((t("a", (1,), "I64"),), r"tensor 'a' has dtype I64; only floating-point tensors \(F32, F16, BF16, F64\)"),
    ((t("a", (100_000, 1001)),), "this model has 100100000 parameters, more than the limit of 100000000"),
])
def test_a_manifest_refuses_what_cannot_be_federated_with_a_sentence(tensors, sentence):
    with pytest.raises(ValueError, match=sentence):
        Manifest(tensors)


def test_name_problem_accepts_ordinary_pytorch_and_keras_names():
    for name in ("conv1.weight", "layer4.1.bn2.running_mean", "dense/kernel:0", "π"):
        assert name_problem(name) == ""


def test_a_manifest_survives_its_json_form_with_the_init_dtype():
    # Execute
    as_json = json.loads(json.dumps(CNN.to_dict()))
    again = Manifest.from_dict(as_json)

    # Assert: equal, wire dtype always F32, the file's dtype kept only where it differs
    assert again == CNN
    assert as_json["kind"] == "tensors"
    assert [e["dtype"] for e in as_json["tensors"]] == ["F32"] * 4
    assert [e.get("init_dtype") for e in as_json["tensors"]] == [None, "F16", None, "BF16"]
    assert again.num_params() == 72 + 8 + 720 + 10


@pytest.mark.parametrize(("raw", "sentence"), [
    ({"kind": "tensors"}, "a tensor manifest needs 'tensors', a list of"),
    ({"kind": "tensors", "tensors": [["w", [2]]]}, "manifest entry 0 must be an object with a name and a shape"),
    ({"kind": "tensors", "tensors": [{"name": "w", "shape": 3}]}, "manifest entry 0 must be an object"),
    ({"kind": "tensors", "tensors": []}, "a model needs at least one tensor"),
    ({"kind": "convnet", "layers": [2, 1]}, "unknown model kind 'convnet'; use 'mlp' .* or 'tensors'"),
    ([1, 2], "a model spec must be a JSON object, got list"),
])
def test_spec_from_dict_refuses_malformed_specs_with_a_sentence(raw, sentence):
    with pytest.raises(ValueError, match=sentence):
        spec_from_dict(raw)


def test_spec_from_dict_reads_the_builtin_mlp_or_a_tensor_manifest_by_kind():
    mlp = spec_from_dict({"kind": "mlp", "layers": [4, 3, 2], "task": "classification"})
    legacy = spec_from_dict({"layers": [10, 64, 1]})  # experiments stored before `kind` existed
    tensors = spec_from_dict(CNN.to_dict())

    assert mlp == MLPSpec((4, 3, 2), "classification") and legacy == MLPSpec()
    assert tensors == CNN


def test_manifest_of_the_mlp_names_its_weights_and_biases_in_order():
    manifest = manifest_of(MLPSpec((3, 4, 2)))

    assert manifest.names() == ["w1", "b1", "w2", "b2"]
    assert manifest.shapes() == [(3, 4), (4,), (4, 2), (2,)]
    assert manifest_of(CNN) is CNN


def test_first_mismatch_names_the_first_tensor_that_does_not_fit():
    fits = [np.zeros(s, np.float32) for s in CNN.shapes()]
    wrong_shape = [fits[0], np.zeros(7), np.zeros((72, 10)), fits[3]]
    text = [fits[0], np.array(["x"] * 8), *fits[2:]]

    assert CNN.first_mismatch(fits) == ""
    assert CNN.first_mismatch(wrong_shape) == "tensor 'conv.bias' should have shape [8] but has [7]"
    assert CNN.first_mismatch(text) == "tensor 'conv.bias' holds <U1 values, not numbers"
    assert CNN.first_mismatch(fits[:2]) == ("the experiment's model has 4 tensors but 2 were given; "
                                            "the first one without a match is 'fc.weight'")
    assert CNN.first_mismatch([*fits, fits[3]]) == "the experiment's model has 4 tensors but 5 were given"


def test_from_shapes_refuses_an_integer_array_by_name():
    with pytest.raises(ValueError, match="tensor 'steps' has dtype int64; only floating-point"):
        Manifest.from_shapes(["w", "steps"], [np.zeros(2, np.float32), np.array([3])])


# --- serde: the initial weights file ---------------------------------------------------------------

def bf16_file(values: dict[str, np.ndarray]) -> bytes:
    """A BF16 safetensors file built by hand: the top 16 bits of each float32 (exact for these values)."""
    words = {name: (np.asarray(v, np.float32).view(np.uint32) >> 16).astype("<u2") for name, v in values.items()}
    header, offset, data = {}, 0, b""
    for name, w in words.items():
        header[name] = {"dtype": "BF16", "shape": list(w.shape), "data_offsets": [offset, offset + w.nbytes]}
        offset, data = offset + w.nbytes, data + w.tobytes()
    encoded = json.dumps(header).encode()
    return len(encoded).to_bytes(8, "little") + encoded + data


def test_bf16_tensors_decode_to_the_float32_values_they_came_from():
    # Prepare: values bfloat16 holds exactly (8 significant bits)
    values = {"w": np.array([[1.0, -2.5, 3.140625], [0.0, 2.0**-130, -65536.0]], np.float32),
              "s": np.array(1.5, np.float32)}

    # Execute
    tensors, _ = loads(bf16_file(values))
    manifest, params = initial_model_loads(bf16_file(values))

    # Assert: same bits, float32, and the manifest remembers the file's dtype
    for name, want in values.items():
        assert tensors[name].dtype == np.float32 and tensors[name].shape == want.shape
        assert tensors[name].tobytes() == want.tobytes()
    assert [(s.name, s.init_dtype) for s in manifest.tensors] == [("w", "BF16"), ("s", "BF16")]
    assert params[0].tobytes() == values["w"].tobytes()


def test_bf16_written_by_the_reference_library_decodes_like_torch_reads_it():
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = torch.tensor([[0.1, -3.3], [1e-3, 7e4]]).to(torch.bfloat16)

    tensors, _ = loads(safetensors_torch.save({"w": weights}))

    assert tensors["w"].tobytes() == weights.float().numpy().tobytes()


def test_initial_model_loads_converts_every_float_width_and_keeps_the_file_order():
    # Prepare
    f16 = np.array([0.5, -1.25], np.float16)
    f64 = np.array([[1 / 3]], np.float64)
    buf = dumps({"z.last": np.ones(3, np.float32), "a.half": f16, "m.double": f64})

    # Execute
    manifest, params = initial_model_loads(buf)

    # Assert
    assert manifest.names() == ["z.last", "a.half", "m.double"]
    assert [s.init_dtype for s in manifest.tensors] == ["F32", "F16", "F64"]
    assert all(p.dtype == np.float32 for p in params)
    np.testing.assert_array_equal(params[1], f16.astype(np.float32))
    assert params[2][0, 0] == np.float32(1 / 3)


@pytest.mark.parametrize(("tensors", "sentence"), [
    ({"w": np.zeros(3, np.float32), "bn.num_batches_tracked": np.array(3, np.int64)},
     "tensor 'bn.num_batches_tracked' is I64; only floating-point tensors .* leave integer buffers"),
    ({"mask": np.array([True, False])}, "tensor 'mask' is BOOL; only floating-point tensors"),
    ({"w": np.array([1.0, np.nan], np.float32)}, "tensor 'w' contains NaN or infinity"),
    ({"w": np.array([np.inf], np.float32)}, "tensor 'w' contains NaN or infinity"),
    ({"w": np.array([1e39], np.float64)}, "tensor 'w' contains NaN or infinity"),
    ({}, "the file holds no tensors; a model needs at least one"),
])
def test_initial_model_loads_refuses_files_that_cannot_start_a_model(tensors, sentence):
    with pytest.raises(SerdeError, match=sentence):
        initial_model_loads(reference.save(tensors))


def test_initial_model_loads_refuses_empty_bytes_and_a_bad_tensor_name():
    with pytest.raises(SerdeError, match="only 0 bytes long, too short to be safetensors"):
        initial_model_loads(b"")
    with pytest.raises(SerdeError, match="tensor name ' w' has leading/trailing space"):
        initial_model_loads(dumps({" w": np.zeros(1, np.float32)}))


def test_params_from_tensors_refuses_float32_bytes_relabelled_as_i32():
    # Prepare: the same 4 bytes per value, declared I32: read as numbers they would be ~1e9
    buf = dumps({"w": np.array([1.0, 2.0], np.float32)})
    relabelled = buf.replace(b'"dtype":"F32"', b'"dtype":"I32"')
    tensors, _ = loads(relabelled)
    manifest = Manifest((TensorSpec("w", (2,)),))

    # Execute / Assert
    assert dtype_names(relabelled) == {"w": "I32"}
    with pytest.raises(SerdeError, match=r"tensor 'w' is stored as int32; parameters must be floating point"):
        params_from_tensors(manifest, tensors)
