"""serving.grpc_service: response tensors as TF Serving writes them."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from serving.grpc_service import fill_tensor_proto

# dtype -> the TensorProto field Tensor::AsProtoField writes it to.
CASES = [(np.float32, "float_val"), (np.float64, "double_val"), (np.int8, "int_val"), (np.uint8, "int_val"),
         (np.int16, "int_val"), (np.uint16, "int_val"), (np.int32, "int_val"), (np.int64, "int64_val"),
         (np.uint32, "uint32_val"), (np.uint64, "uint64_val"), (np.bool_, "bool_val"), (np.float16, "half_val")]


@pytest.mark.parametrize("dtype,field", CASES, ids=[np.dtype(d).name for d, _ in CASES])
@pytest.mark.parametrize("shape", [(3, 2), (0, 1), ()])
def test_outputs_go_in_the_typed_field_and_read_back_equal(dtype, field, shape):
    array = (np.arange(int(np.prod(shape))).reshape(shape) % 3).astype(dtype)
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    assert proto.dtype == tf.as_dtype(dtype).as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == list(shape)
    assert not proto.tensor_content
    assert len(getattr(proto, field)) == array.size
    back = tf.make_ndarray(proto)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_float_values_keep_every_bit_through_the_packed_write():
    array = np.array([[0.1], [1e-30], [np.inf], [-0.0], [123456.789]], dtype=np.float32)
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    assert np.asarray(proto.float_val, dtype=np.float32).tobytes() == array.tobytes()
    # A big output needs a multi-byte length prefix.
    big = np.linspace(0, 1, 40_000, dtype=np.float64).reshape(-1, 4)
    fill_tensor_proto(proto := tensor_pb2.TensorProto(), big)
    np.testing.assert_array_equal(np.asarray(proto.double_val).reshape(big.shape), big)


def test_strings_go_in_string_val():
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, np.array([b"a", b"bc"], dtype=object))
    assert list(proto.string_val) == [b"a", b"bc"] and not proto.tensor_content
