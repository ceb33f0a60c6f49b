"""The KServe v2 gRPC service (`inference.GRPCInferenceService`) beside tilecast's own, so that clients
written for NVIDIA Triton or KServe run tilecast's models unchanged: same batchers, same checks, same
status codes.

A model takes its image input as an NHWC batch; a percentile model also takes channel_low and
channel_high, FP32 [N, C], one row per tile. Inputs travel as raw bytes (`raw_input_contents`, what
tritonclient sends) or as typed values (`contents`); outputs always go back raw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np

from tilecast.proto import tensors
from tilecast.proto.errors import Internal, InvalidArgument, NotFound, TilecastError, Unavailable, echo
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2, kserve_v2_pb2_grpc, manifest_pb2
from tilecast.proto.v1 import kserve_v2_pb2 as v2
from tilecast.server.backends.base import Array
from tilecast.server.boundary import bounded
from tilecast.server.metrics import Metrics
from tilecast.server.models import ModelManager, Served
from tilecast.server.servicer import (
    CallRecord,
    Context,
    RequestCounter,
    deadline_of,
    run_batch,
    stream_errors,
    unary_errors,
)
from tilecast.server.streams import IdleWatch, Job, Leases, StreamRunner, answered, stacked
from tilecast.server.validation import checked_range
from tilecast.version import __version__

log = logging.getLogger(__name__)

SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
DATATYPES: dict[int, str] = {  # wire dtype -> the protocol's datatype name
    manifest_pb2.DTYPE_UINT8: "UINT8", manifest_pb2.DTYPE_UINT16: "UINT16", manifest_pb2.DTYPE_FLOAT16: "FP16",
    manifest_pb2.DTYPE_FLOAT32: "FP32", manifest_pb2.DTYPE_INT32: "INT32", manifest_pb2.DTYPE_INT64: "INT64",
}
_WIRE_DTYPES = {name: code for code, name in DATATYPES.items()}
# Where typed (not raw) values of each datatype travel; FP16 has no field and must be raw.
_TYPED_FIELDS = {"UINT8": "uint_contents", "UINT16": "uint_contents", "INT32": "int_contents",
                 "INT64": "int64_contents", "FP32": "fp32_contents"}
EXTENSIONS = ["model_configuration", "statistics", "model_repository"]  # Triton's names for the extensions served here
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}  # Triton's platform names

InferInput = v2.ModelInferRequest.InferInputTensor
TensorMetadata = v2.ModelMetadataResponse.TensorMetadata


_MAX_VERSION_DIGITS = 18  # a version folder's number fits an int64, as tilecast.v1's version field does


def _version(text: str) -> int:
    """The protocol's version string; empty means the newest ready version. ASCII digits only
    (str.isdigit() also takes '²', which int() refuses), and few enough to be a version."""
    if text and not (text.isascii() and text.isdigit() and len(text) <= _MAX_VERSION_DIGITS):
        raise InvalidArgument(f"model version must be a whole number of at most {_MAX_VERSION_DIGITS} digits "
                              f"(or empty for the newest), not {echo(text)}")
    return int(text or 0)


def _wire_dtype(tensor: InferInput) -> int:
    code = _WIRE_DTYPES.get(tensor.datatype)
    if code is None:
        raise InvalidArgument(f"input {echo(tensor.name)}: datatype {echo(tensor.datatype)} is not served; "
                              f"use one of {', '.join(sorted(_WIRE_DTYPES))}")
    return code


def _typed_bytes(tensor: InferInput) -> bytes:
    """Typed values as the raw bytes they stand for, refusing values the datatype cannot hold."""
    field = _TYPED_FIELDS.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"input {echo(tensor.name)}: send {tensor.datatype or 'untyped'} values in "
                              "raw_input_contents (typed contents carry UINT8, UINT16, INT32, INT64 and FP32)")
    dtype = tensors.to_numpy_dtype(_wire_dtype(tensor))  # type: ignore[arg-type]
    values = np.asarray(getattr(tensor.contents, field))
    if dtype.kind in "ui" and values.size:
        limits = np.iinfo(dtype.str)
        if values.min() < limits.min or values.max() > limits.max:
            raise InvalidArgument(f"input {echo(tensor.name)}: values outside the range of {tensor.datatype}")
    return values.astype(dtype).tobytes()


def _inputs(request: v2.ModelInferRequest) -> dict[str, tuple[InferInput, bytes]]:
    """Each input tensor with its bytes, from raw_input_contents or its typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs; "
                              "send one per input, in the order of inputs")
    given: dict[str, tuple[InferInput, bytes]] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in given:
            raise InvalidArgument(f"input {echo(tensor.name)} is given twice")
        if raw and tensor.HasField("contents"):
            raise InvalidArgument(f"input {echo(tensor.name)} has typed contents and raw_input_contents is set; "
                                  "send every input one way")
        given[tensor.name] = (tensor, raw[index] if raw else _typed_bytes(tensor))
    return given


def _range_rows(spec: ModelSpec, tensor: InferInput, data: bytes, tiles: int) -> Array:
    """channel_low or channel_high: FP32 [N, C], one row per tile of the batch."""
    want = (tiles, spec.channels)
    if tensor.datatype != "FP32" or tuple(tensor.shape) != want:
        raise InvalidArgument(f"model {spec.name}: input {tensor.name!r} must be FP32 of shape {list(want)} "
                              f"(one row per tile), received {echo(tensor.datatype)} {echo(tensor.shape)}")
    if len(data) != want[0] * want[1] * 4:
        raise InvalidArgument(f"input {tensor.name!r}: shape {list(want)} of FP32 needs {want[0] * want[1] * 4} "
                              f"bytes, received {len(data)}")
    return np.frombuffer(data, np.float32).reshape(want)


def _samples(served: Served, given: dict[str, tuple[InferInput, bytes]],
             outputs: tuple[int, ...]) -> list[dict[str, Array]]:
    """The batch's tiles as the batcher takes them, each with its own range on a percentile model;
    refused before computing when the reply with `outputs` would be too large to send."""
    spec, check = served.spec, served.check
    expected = [tensor.name for tensor in served.manifest.inputs]
    missing, unknown = [n for n in expected if n not in given], sorted(set(given) - set(expected))
    if missing or unknown:
        raise InvalidArgument(f"model {spec.name} takes inputs {expected}; "
                              + "; ".join(f"{what} {echo(names)}" for what, names in (("missing", missing),
                                                                                      ("unknown", unknown)) if names))
    image, data = given[check.input_name]
    batch = check.view(_wire_dtype(image), tuple(image.shape), data, batched=True, outputs=outputs)
    samples: list[dict[str, Array]] = [{check.input_name: tile} for tile in batch]
    if spec.range_inputs is not None:
        low_name, high_name = spec.range_inputs
        low, high = checked_range(spec, _range_rows(spec, *given[low_name], len(batch)),
                                  _range_rows(spec, *given[high_name], len(batch)))
        for sample, low_row, high_row in zip(samples, low, high, strict=True):
            sample[low_name], sample[high_name] = low_row, high_row
    return samples


def _requested(spec: ModelSpec, request: v2.ModelInferRequest) -> tuple[int, ...]:
    """Indexes of the outputs to send back: those asked for, or all."""
    names = [output.name for output in spec.outputs]
    wanted = []
    for output in request.outputs:
        if output.name not in names:
            raise InvalidArgument(f"model {spec.name} has outputs {names}; {echo(output.name)} is not one of them")
        wanted.append(names.index(output.name))
    return tuple(wanted) or tuple(range(len(names)))


def _dims(spec: manifest_pb2.TensorSpec) -> list[int]:
    """A tensor's shape without the batch axis (-1: any size), as Triton's model config writes it."""
    return [-1, -1, spec.channels] if spec.layout == manifest_pb2.LAYOUT_NHWC else [spec.channels]


def _metadata(spec: manifest_pb2.TensorSpec) -> TensorMetadata:
    return TensorMetadata(name=spec.name, datatype=DATATYPES.get(spec.dtype, ""), shape=[-1, *_dims(spec)])


def _engine(served: Served) -> str:
    """The backend serving a version ('' once retired: a version unloaded since it was resolved)."""
    engines = served.entry.backends
    return engines[0].name if engines else ""


def _config(served: Served) -> v2.ModelConfig:
    """Triton's description of a served version: tensors without the batch axis, batching, instances."""
    manifest, engines, engine = served.manifest, served.entry.backends, _engine(served)
    limits = served.batcher.limits
    providers = getattr(engines[0], "providers", []) if engines else []
    on_gpu = engine == "tensorrt" or any(p != "CPUExecutionProvider" for p in providers)
    config = v2.ModelConfig(
        name=manifest.name, platform=PLATFORMS.get(engine, ""), backend=engine, max_batch_size=limits.max_batch_size,
        instance_group=[v2.ModelInstanceGroup(name=manifest.name, count=limits.instances, kind=(
            v2.ModelInstanceGroup.KIND_GPU if on_gpu else v2.ModelInstanceGroup.KIND_CPU))],
        dynamic_batching=v2.ModelDynamicBatching(
            max_queue_delay_microseconds=round(limits.max_queue_delay_s * 1e6),
            default_queue_policy=v2.ModelQueuePolicy(max_queue_size=limits.max_queue_size)))
    for spec in manifest.inputs:
        image = spec.name == served.spec.image.name
        config.input.add(name=spec.name, data_type=_config_dtype(spec.dtype), dims=_dims(spec),
                         format=v2.ModelInput.FORMAT_NHWC if image else v2.ModelInput.FORMAT_NONE)
    for spec in manifest.outputs:
        config.output.add(name=spec.name, data_type=_config_dtype(spec.dtype), dims=_dims(spec))
    return config


def _config_dtype(dtype: manifest_pb2.DType) -> v2.DataType:
    """Triton's model-config enum for a wire dtype: TYPE_ and the protocol's datatype name."""
    name = DATATYPES.get(dtype)
    return cast(v2.DataType, v2.DataType.Value(f"TYPE_{name}")) if name else v2.TYPE_INVALID


def _duration(count: int, seconds: float) -> v2.StatisticDuration:
    return v2.StatisticDuration(count=count, ns=round(seconds * 1e9))


def _statistics(served: Served) -> v2.ModelStatistics:
    """Triton's statistics of a version, from its batcher's counts (a "request" is a tile)."""
    stats = served.batcher.statistics()
    ok = stats.succeeded.count
    return v2.ModelStatistics(
        name=served.entry.name, version=str(served.entry.version), last_inference=round(stats.last_batch_at * 1000),
        inference_count=stats.tiles, execution_count=stats.batches,
        inference_stats=v2.InferStatistics(
            success=_duration(ok, stats.succeeded.seconds), fail=_duration(stats.failed.count, stats.failed.seconds),
            queue=_duration(stats.queued.count, stats.queued.seconds),
            compute_input=_duration(stats.prepared.count, stats.prepared.seconds),
            compute_infer=_duration(stats.computed.count, stats.computed.seconds),
            compute_output=_duration(ok, 0.0)),
        batch_stats=[v2.InferBatchStatistics(
            batch_size=size, compute_input=_duration(calls.batches, calls.prepare_seconds),
            compute_infer=_duration(calls.batches, calls.compute_seconds), compute_output=_duration(calls.batches, 0.0))
            for size, calls in sorted(stats.by_size.items())])


class KServeServicer(RequestCounter, kserve_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: ModelManager, metrics: Metrics, accepting: Callable[[], bool],
                 stream_window: int, idle: IdleWatch) -> None:
        """`accepting` says whether the server takes new work (false while it shuts down);
        `stream_window` is how many tiles of one ModelStreamInfer call are in flight at once; `idle`
        ends the streams that send nothing for too long."""
        self._models = models
        self._metrics = metrics
        self._accepting = accepting
        self._stream_window = stream_window
        self._idle = idle

    @unary_errors
    def ServerLive(self, request: v2.ServerLiveRequest, context: Context) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    @unary_errors
    def ServerReady(self, request: v2.ServerReadyRequest, context: Context) -> v2.ServerReadyResponse:
        statuses = self._models.statuses()
        ready = {s.name for s in statuses if s.state == inference_pb2.MODEL_STATE_READY}
        return v2.ServerReadyResponse(ready=self._accepting() and all(s.name in ready for s in statuses))

    @unary_errors
    def ModelReady(self, request: v2.ModelReadyRequest, context: Context) -> v2.ModelReadyResponse:
        version = _version(request.version)
        try:
            self._models.resolve(request.name, version)
        except (NotFound, Unavailable):
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=True)

    @unary_errors
    def ServerMetadata(self, request: v2.ServerMetadataRequest, context: Context) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(name="tilecast", version=__version__, extensions=EXTENSIONS)

    @unary_errors
    def ModelMetadata(self, request: v2.ModelMetadataRequest, context: Context) -> v2.ModelMetadataResponse:
        served = self._models.resolve(request.name, _version(request.version))
        manifest = served.manifest
        versions = [str(ready.entry.version) for ready in self._models.ready_versions(request.name)]
        return v2.ModelMetadataResponse(
            name=manifest.name, versions=versions, platform=PLATFORMS.get(_engine(served), ""),
            inputs=[_metadata(spec) for spec in manifest.inputs],
            outputs=[_metadata(spec) for spec in manifest.outputs])

    @unary_errors
    def ModelInfer(self, request: v2.ModelInferRequest, context: Context) -> v2.ModelInferResponse:
        return self._infer(request, context, books_after_send=True)

    @unary_errors
    def ModelConfig(self, request: v2.ModelConfigRequest, context: Context) -> v2.ModelConfigResponse:
        served = self._models.resolve(request.name, _version(request.version))
        return v2.ModelConfigResponse(config=_config(served))

    @unary_errors
    def ModelStatistics(self, request: v2.ModelStatisticsRequest, context: Context) -> v2.ModelStatisticsResponse:
        version = _version(request.version)
        if version and not request.name:
            raise InvalidArgument("statistics of a model version need the model's name too")
        return v2.ModelStatisticsResponse(
            model_stats=[_statistics(served) for served in self._models.ready_versions(request.name, version)])

    @unary_errors
    def RepositoryIndex(self, request: v2.RepositoryIndexRequest, context: Context) -> v2.RepositoryIndexResponse:
        self._check_repository(request.repository_name)
        return v2.RepositoryIndexResponse(models=[
            v2.RepositoryIndexResponse.ModelIndex(name=name, version=version, state=state, reason=reason)
            for name, version, state, reason in self._models.index() if state == "READY" or not request.ready])

    @unary_errors
    def RepositoryModelLoad(self, request: v2.RepositoryModelLoadRequest,
                            context: Context) -> v2.RepositoryModelLoadResponse:
        self._check_repository(request.repository_name)
        if request.parameters:
            raise InvalidArgument(f"loading with parameters ({', '.join(sorted(request.parameters))}) is not "
                                  "supported: tilecast loads a model only as its repository folder holds it")
        self._models.load_model(request.model_name, context.time_remaining())
        return v2.RepositoryModelLoadResponse()

    @unary_errors
    def RepositoryModelUnload(self, request: v2.RepositoryModelUnloadRequest,
                              context: Context) -> v2.RepositoryModelUnloadResponse:
        self._check_repository(request.repository_name)
        unknown = sorted(set(request.parameters) - {"unload_dependents"})  # none depend on another here
        if unknown:
            raise InvalidArgument(f"unknown unload parameters {echo(unknown)}; only unload_dependents is taken")
        self._models.unload_model(request.model_name, context.time_remaining())
        return v2.RepositoryModelUnloadResponse()

    def _check_repository(self, name: str) -> None:
        folder = self._models.repository.name
        if name and name != folder:
            raise NotFound(f"this server has one model repository, {folder!r}; leave repository_name empty")

    @stream_errors
    def ModelStreamInfer(self, requests: Iterator[v2.ModelInferRequest], context: Context,
                         record: CallRecord) -> Iterator[v2.ModelStreamInferResponse]:
        """Several requests computed at once, so one stream's tiles batch; answers in the order they
        finish (matched by id). A request that fails is answered with its error; the stream goes on."""
        record.counts_requests = True
        infers = _InferMessages(self._models, self.count, record, deadline_of(context))
        try:
            yield from StreamRunner(infers.accept, self._stream_window, context, self._idle,
                                    "stream-requests").run(requests)
        finally:
            infers.leases.close()

    def _infer(self, request: v2.ModelInferRequest, context: Context, *,
               books_after_send: bool) -> v2.ModelInferResponse:
        with self._models.lease(request.model_name, _version(request.model_version)) as served:
            wanted = _requested(served.spec, request)
            outputs, _ = run_batch(served, _samples(served, _inputs(request), wanted), deadline_of(context), context,
                                   books_after_send=books_after_send)
            return _response(served, request, wanted, outputs)


def _response(served: Served, request: v2.ModelInferRequest, wanted: tuple[int, ...],
              outputs: list[Array]) -> v2.ModelInferResponse:
    """The outputs asked for, raw, as a ModelInferResponse."""
    response = v2.ModelInferResponse(model_name=served.entry.name, model_version=str(served.entry.version),
                                     id=request.id)
    for index in wanted:
        code, array = tensors.packed(outputs[index])
        response.outputs.add(name=served.manifest.outputs[index].name, datatype=DATATYPES[code], shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


class _InferMessages:
    """ModelStreamInfer's requests for the stream runner: each one a job of its tiles, answered with its
    outputs or its error (Triton's error_message); each counted with its own code."""

    def __init__(self, models: ModelManager, count: Callable[[str, str, str], None], record: CallRecord,
                 deadline: float | None) -> None:
        self.leases = Leases(models)
        self._count = count
        self._record = record
        self._deadline = deadline

    def accept(self, request: v2.ModelInferRequest) -> Job:
        self._record.model = self._record.model or request.model_name
        try:
            served = self.leases.hold(request.model_name, _version(request.model_version))
            wanted = _requested(served.spec, request)
            samples = _samples(served, _inputs(request), wanted)
        except TilecastError as exc:
            return answered(self._failed(request, exc))
        except Exception as exc:  # a bug met by one request: that request's error, not the stream's end
            log.exception("unexpected error in a ModelStreamInfer request")
            return answered(self._failed(request, Internal(f"internal server error: {type(exc).__name__}: {exc}")))
        nbytes = sum(sample[served.check.input_name].nbytes for sample in samples)
        return Job(samples, served.batcher, self._answer, self._deadline, nbytes, (request, served, wanted))

    def _answer(self, job: Job) -> v2.ModelStreamInferResponse:
        request, served, wanted = job.tag
        if job.error is not None:
            return self._failed(request, job.error)
        response = _response(served, request, wanted, stacked([r for r in job.outcomes if r is not None]))
        self._count(request.model_name, "ModelStreamInfer", "OK")
        return v2.ModelStreamInferResponse(infer_response=response)

    def _failed(self, request: v2.ModelInferRequest, exc: TilecastError) -> v2.ModelStreamInferResponse:
        self._count(request.model_name, "ModelStreamInfer", exc.code.name)
        return v2.ModelStreamInferResponse(error_message=bounded(str(exc)), infer_response=v2.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id))
