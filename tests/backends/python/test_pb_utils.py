"""triton_python_backend_utils' pure pieces: dtype maps, tensors, responses, ModelConfig."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritium.backends.python import pb_utils


def test_dtype_maps() -> None:
    assert pb_utils.triton_to_numpy_type(11) is np.float32
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    assert pb_utils.numpy_to_triton_type(np.float32) == 11
    assert pb_utils.numpy_to_triton_type(np.bool_) == 1
    assert pb_utils.numpy_to_triton_type(np.object_) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.complex64) is None
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.triton_string_to_numpy("TYPE_INT64") is np.int64


def test_constants() -> None:
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL == 1
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE == 2
    assert pb_utils.TritonError.CANCELLED == 7


def test_serialize_and_deserialize_bytes() -> None:
    values = np.array([b"one", b"", b"two"], dtype=np.object_)
    flat = pb_utils.serialize_byte_tensor(values)
    assert flat.dtype == np.uint8
    assert pb_utils.deserialize_bytes_tensor(flat.tobytes()).tolist() == values.tolist()
    assert pb_utils.deserialize_bytes_tensor(flat).tolist() == values.tolist()


def test_tensor_accessors_and_string_arrays() -> None:
    t = pb_utils.Tensor("X", np.ones((2, 3), np.float16))
    assert (t.name(), t.triton_dtype(), t.shape(), t.is_cpu()) == ("X", 10, [2, 3], True)
    s = pb_utils.Tensor("S", np.array(["héllo", "a"]))
    assert s.triton_dtype() == 13 and s.as_numpy().tolist() == ["héllo".encode(), b"a"]
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor("C", np.ones(2, np.complex64))


def test_dlpack_round_trips() -> None:
    torch = pytest.importorskip("torch")
    t = pb_utils.Tensor("X", np.arange(4, dtype=np.float32))
    torch_view = torch.utils.dlpack.from_dlpack(t.to_dlpack())
    assert torch_view.tolist() == [0, 1, 2, 3]
    assert torch.from_dlpack(t).tolist() == [0, 1, 2, 3]
    back = pb_utils.Tensor.from_dlpack("Y", torch.tensor([1.5, 2.5]))
    assert back.triton_dtype() == 11 and back.as_numpy().tolist() == [1.5, 2.5]
    bf16 = pb_utils.Tensor.from_dlpack("B", torch.tensor([1.0, -2.0], dtype=torch.bfloat16))
    assert bf16.triton_dtype() == 14
    with pytest.raises(pb_utils.TritonModelException):
        bf16.as_numpy()
    assert torch.utils.dlpack.from_dlpack(bf16.to_dlpack()).tolist() == [1.0, -2.0]
    from_capsule = pb_utils.Tensor.from_dlpack(
        "C", torch.tensor([7], dtype=torch.int32).__dlpack__()
    )
    assert from_capsule.as_numpy().tolist() == [7]


def test_response_and_error() -> None:
    error = pb_utils.TritonError("bad", pb_utils.TritonError.NOT_FOUND)
    response = pb_utils.InferenceResponse(output_tensors=[], error=error, parameters={"k": 1})
    assert response.has_error() and response.error().message() == "bad"
    assert response.error().code() == pb_utils.TritonError.NOT_FOUND
    assert json.loads(response.parameters()) == {"k": 1}
    assert pb_utils.TritonError("x").code() == pb_utils.TritonError.INTERNAL
    out = pb_utils.Tensor("OUT", np.zeros(1))
    assert pb_utils.get_output_tensor_by_name(pb_utils.InferenceResponse([out]), "OUT") is out
    assert pb_utils.get_output_tensor_by_name(pb_utils.InferenceResponse([out]), "NO") is None
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.InferenceResponse(out)  # type: ignore[arg-type]


def test_bls_request_fields_and_input_lookup() -> None:
    a = pb_utils.Tensor("A", np.zeros(2, np.int32))
    request = pb_utils.InferenceRequest(
        model_name="m", inputs=[a], requested_output_names=["O"], parameters={"p": "v"}
    )
    assert pb_utils.get_input_tensor_by_name(request, "A") is a
    assert pb_utils.get_input_tensor_by_name(request, "B") is None
    assert request.requested_output_names() == ["O"] and json.loads(request.parameters()) == {
        "p": "v"
    }
    assert not request.is_cancelled()
    with pytest.raises(pb_utils.TritonModelException):
        request.exec()  # outside a stub there is no server to run it


def test_config_lookups() -> None:
    config = {
        "input": [{"name": "I", "data_type": "TYPE_FP32"}],
        "output": [{"name": "O", "data_type": "TYPE_INT8"}],
        "model_transaction_policy": {"decoupled": True},
    }
    assert pb_utils.get_input_config_by_name(config, "I")["data_type"] == "TYPE_FP32"
    assert pb_utils.get_output_config_by_name(config, "O")["data_type"] == "TYPE_INT8"
    assert pb_utils.get_input_config_by_name(config, "O") is None
    assert pb_utils.using_decoupled_model_transaction_policy(config)
    assert not pb_utils.using_decoupled_model_transaction_policy({})


def test_model_config_auto_complete_rules() -> None:
    cfg = pb_utils.ModelConfig(
        json.dumps(
            {
                "name": "m",
                "max_batch_size": 0,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
                "output": [],
            }
        )
    )
    cfg.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [4]})  # same: accepted
    with pytest.raises(ValueError, match="configuration expects datatype TYPE_FP32"):
        cfg.add_input({"name": "X", "data_type": "TYPE_INT32", "dims": [4]})
    with pytest.raises(ValueError, match="missing 'dims'"):
        cfg.add_output({"name": "Y", "data_type": "TYPE_FP32"})
    cfg.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]})
    cfg.set_max_batch_size(8)
    cfg.set_dynamic_batching()
    cfg.set_model_transaction_policy({"decoupled": True})
    config = cfg.as_dict()
    assert config["max_batch_size"] == 8 and config["dynamic_batching"] == {}
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert [o["name"] for o in config["output"]] == ["Y"]
    with pytest.raises(ValueError, match="specified max_batch_size 8"):
        cfg.set_max_batch_size(4)
