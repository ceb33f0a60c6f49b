from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_UINT16: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]

class Layout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYOUT_UNSPECIFIED: _ClassVar[Layout]
    LAYOUT_NHWC: _ClassVar[Layout]
    LAYOUT_NC: _ClassVar[Layout]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_GENERATOR: _ClassVar[ModelKind]
    MODEL_KIND_SEGMENTER: _ClassVar[ModelKind]
    MODEL_KIND_CLASSIFIER: _ClassVar[ModelKind]

class OutputInterpretation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_INTERPRETATION_UNSPECIFIED: _ClassVar[OutputInterpretation]
    OUTPUT_INTERPRETATION_IMAGE: _ClassVar[OutputInterpretation]
    OUTPUT_INTERPRETATION_CLASS_LABELS: _ClassVar[OutputInterpretation]
    OUTPUT_INTERPRETATION_CLASS_PROBABILITIES: _ClassVar[OutputInterpretation]
    OUTPUT_INTERPRETATION_CLASS_SCORES: _ClassVar[OutputInterpretation]

class NormalizationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMALIZATION_MODE_UNSPECIFIED: _ClassVar[NormalizationMode]
    NORMALIZATION_MODE_FIXED: _ClassVar[NormalizationMode]
    NORMALIZATION_MODE_PERCENTILE: _ClassVar[NormalizationMode]
DTYPE_UNSPECIFIED: DType
DTYPE_UINT8: DType
DTYPE_UINT16: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_INT32: DType
DTYPE_INT64: DType
LAYOUT_UNSPECIFIED: Layout
LAYOUT_NHWC: Layout
LAYOUT_NC: Layout
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_GENERATOR: ModelKind
MODEL_KIND_SEGMENTER: ModelKind
MODEL_KIND_CLASSIFIER: ModelKind
OUTPUT_INTERPRETATION_UNSPECIFIED: OutputInterpretation
OUTPUT_INTERPRETATION_IMAGE: OutputInterpretation
OUTPUT_INTERPRETATION_CLASS_LABELS: OutputInterpretation
OUTPUT_INTERPRETATION_CLASS_PROBABILITIES: OutputInterpretation
OUTPUT_INTERPRETATION_CLASS_SCORES: OutputInterpretation
NORMALIZATION_MODE_UNSPECIFIED: NormalizationMode
NORMALIZATION_MODE_FIXED: NormalizationMode
NORMALIZATION_MODE_PERCENTILE: NormalizationMode

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "channels", "layout", "interpretation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    INTERPRETATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    channels: int
    layout: Layout
    interpretation: OutputInterpretation
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., channels: _Optional[int] = ..., layout: _Optional[_Union[Layout, str]] = ..., interpretation: _Optional[_Union[OutputInterpretation, str]] = ...) -> None: ...

class Tiling(_message.Message):
    __slots__ = ("tile_size", "halo", "size_multiple", "min_size", "max_size", "max_batch_size", "has_global_ops", "receptive_radius")
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HALO_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    HAS_GLOBAL_OPS_FIELD_NUMBER: _ClassVar[int]
    RECEPTIVE_RADIUS_FIELD_NUMBER: _ClassVar[int]
    tile_size: int
    halo: int
    size_multiple: int
    min_size: int
    max_size: int
    max_batch_size: int
    has_global_ops: bool
    receptive_radius: int
    def __init__(self, tile_size: _Optional[int] = ..., halo: _Optional[int] = ..., size_multiple: _Optional[int] = ..., min_size: _Optional[int] = ..., max_size: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., has_global_ops: _Optional[bool] = ..., receptive_radius: _Optional[int] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("mode", "mean", "std", "low_percentile", "high_percentile", "baked_into_graph", "description")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    LOW_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    HIGH_PERCENTILE_FIELD_NUMBER: _ClassVar[int]
    BAKED_INTO_GRAPH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    mode: NormalizationMode
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    low_percentile: float
    high_percentile: float
    baked_into_graph: bool
    description: str
    def __init__(self, mode: _Optional[_Union[NormalizationMode, str]] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., low_percentile: _Optional[float] = ..., high_percentile: _Optional[float] = ..., baked_into_graph: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("training_data", "command", "architecture", "metrics", "parity", "created", "tilecast_version", "exporter", "opset")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TILECAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    training_data: str
    command: str
    architecture: str
    metrics: _containers.ScalarMap[str, float]
    parity: _containers.ScalarMap[str, float]
    created: str
    tilecast_version: str
    exporter: str
    opset: int
    def __init__(self, training_data: _Optional[str] = ..., command: _Optional[str] = ..., architecture: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., parity: _Optional[_Mapping[str, float]] = ..., created: _Optional[str] = ..., tilecast_version: _Optional[str] = ..., exporter: _Optional[str] = ..., opset: _Optional[int] = ...) -> None: ...

class FileChecksum(_message.Message):
    __slots__ = ("path", "sha256", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class Serving(_message.Message):
    __slots__ = ("max_batch_size", "max_queue_delay_ms", "instances")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_queue_delay_ms: float
    instances: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_queue_delay_ms: _Optional[float] = ..., instances: _Optional[int] = ...) -> None: ...

class EnginePlan(_message.Message):
    __slots__ = ("path", "gpu_architecture", "tensorrt_version", "precision", "min_shape", "opt_shape", "max_shape", "parity")
    class ParityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    GPU_ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TENSORRT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MIN_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OPT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    MAX_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PARITY_FIELD_NUMBER: _ClassVar[int]
    path: str
    gpu_architecture: str
    tensorrt_version: str
    precision: str
    min_shape: _containers.RepeatedScalarFieldContainer[int]
    opt_shape: _containers.RepeatedScalarFieldContainer[int]
    max_shape: _containers.RepeatedScalarFieldContainer[int]
    parity: _containers.ScalarMap[str, float]
    def __init__(self, path: _Optional[str] = ..., gpu_architecture: _Optional[str] = ..., tensorrt_version: _Optional[str] = ..., precision: _Optional[str] = ..., min_shape: _Optional[_Iterable[int]] = ..., opt_shape: _Optional[_Iterable[int]] = ..., max_shape: _Optional[_Iterable[int]] = ..., parity: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ModelManifest(_message.Message):
    __slots__ = ("name", "version", "kind", "description", "inputs", "outputs", "tiling", "preprocessing", "class_names", "provenance", "files", "backends", "serving", "plans")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TILING_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kind: ModelKind
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    tiling: Tiling
    preprocessing: Preprocessing
    class_names: _containers.RepeatedScalarFieldContainer[str]
    provenance: Provenance
    files: _containers.RepeatedCompositeFieldContainer[FileChecksum]
    backends: _containers.RepeatedScalarFieldContainer[str]
    serving: Serving
    plans: _containers.RepeatedCompositeFieldContainer[EnginePlan]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., tiling: _Optional[_Union[Tiling, _Mapping]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., class_names: _Optional[_Iterable[str]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., files: _Optional[_Iterable[_Union[FileChecksum, _Mapping]]] = ..., backends: _Optional[_Iterable[str]] = ..., serving: _Optional[_Union[Serving, _Mapping]] = ..., plans: _Optional[_Iterable[_Union[EnginePlan, _Mapping]]] = ...) -> None: ...
