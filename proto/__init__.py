"""The contract: gRPC messages and services (tilecast.v1), the manifest schema, tensors and errors."""

from tilecast.proto import errors, manifest, tensors
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc, manifest_pb2

__all__ = ["errors", "inference_pb2", "inference_pb2_grpc", "manifest", "manifest_pb2", "tensors"]
