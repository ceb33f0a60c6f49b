from tilecast.proto.v1 import manifest_pb2 as _manifest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_FAILED: ModelState

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: _manifest_pb2.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[_manifest_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageParameters(_message.Message):
    __slots__ = ("channel_low", "channel_high")
    CHANNEL_LOW_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_HIGH_FIELD_NUMBER: _ClassVar[int]
    channel_low: _containers.RepeatedScalarFieldContainer[float]
    channel_high: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, channel_low: _Optional[_Iterable[float]] = ..., channel_high: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "version", "state", "reason", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    state: ModelState
    reason: str
    kind: _manifest_pb2.ModelKind
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., reason: _Optional[str] = ..., kind: _Optional[_Union[_manifest_pb2.ModelKind, str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("manifest",)
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    manifest: _manifest_pb2.ModelManifest
    def __init__(self, manifest: _Optional[_Union[_manifest_pb2.ModelManifest, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "parameters", "tiles")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    parameters: ImageParameters
    tiles: Tensor
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., parameters: _Optional[_Union[ImageParameters, _Mapping]] = ..., tiles: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ServerTiming(_message.Message):
    __slots__ = ("queue_us", "compute_us", "batch_size")
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_us: int
    compute_us: int
    batch_size: int
    def __init__(self, queue_us: _Optional[int] = ..., compute_us: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "outputs", "timing")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    timing: ServerTiming
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ...) -> None: ...

class StreamHeader(_message.Message):
    __slots__ = ("model", "version", "parameters")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    parameters: ImageParameters
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., parameters: _Optional[_Union[ImageParameters, _Mapping]] = ...) -> None: ...

class Tile(_message.Message):
    __slots__ = ("id", "tensor", "deadline_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    tensor: Tensor
    deadline_ms: int
    def __init__(self, id: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class StreamPredictRequest(_message.Message):
    __slots__ = ("header", "tile")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    header: StreamHeader
    tile: Tile
    def __init__(self, header: _Optional[_Union[StreamHeader, _Mapping]] = ..., tile: _Optional[_Union[Tile, _Mapping]] = ...) -> None: ...

class TileResult(_message.Message):
    __slots__ = ("id", "outputs", "timing", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    timing: ServerTiming
    code: int
    message: str
    def __init__(self, id: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamPredictResponse(_message.Message):
    __slots__ = ("result", "version")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    result: TileResult
    version: int
    def __init__(self, result: _Optional[_Union[TileResult, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...
