"""One typed view of a model manifest: what the client, the server's validation and the KServe service
ask of a model (its kind, its image input, its image-global inputs by name, its tiling), answered once.

Use `ModelSpec.of(manifest)` wherever code would otherwise look at `manifest.inputs[1]` or guess a
classifier from an output layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilecast.proto.errors import ManifestError
from tilecast.proto.v1 import manifest_pb2

# A percentile model's per-image range inputs, each (N, C) float32: the names export gives them.
RANGE_INPUT_NAMES = ("channel_low", "channel_high")


@dataclass(frozen=True)
class ModelSpec:
    """The facts of one model version that tiling, validation and serving depend on."""

    manifest: manifest_pb2.ModelManifest
    image: manifest_pb2.TensorSpec  # the NHWC image input
    range_inputs: tuple[str, str] | None  # (low, high) input names of a percentile model, else None

    @classmethod
    def of(cls, manifest: manifest_pb2.ModelManifest) -> ModelSpec:
        """The view of `manifest`; raises ManifestError when its inputs do not fit its preprocessing."""
        by_name = {spec.name: spec for spec in manifest.inputs}
        images = [spec for spec in manifest.inputs if spec.name not in RANGE_INPUT_NAMES]
        if len(images) != 1:
            raise ManifestError(f"model {manifest.name} must have exactly one image input, "
                                f"has {[s.name for s in images]}")
        percentile = manifest.preprocessing.mode == manifest_pb2.NORMALIZATION_MODE_PERCENTILE
        present = [n for n in RANGE_INPUT_NAMES if n in by_name]
        if percentile and len(present) != 2:
            raise ManifestError(f"model {manifest.name} normalises by image percentiles but does not take "
                                f"both {' and '.join(RANGE_INPUT_NAMES)} as inputs")
        if not percentile and present:
            raise ManifestError(f"model {manifest.name} takes {present} but does not normalise by percentiles")
        ranges = (RANGE_INPUT_NAMES[0], RANGE_INPUT_NAMES[1]) if percentile else None
        return cls(manifest, images[0], ranges)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def kind(self) -> manifest_pb2.ModelKind:
        return self.manifest.kind

    @property
    def is_classifier(self) -> bool:
        """A patch classifier: one vector of class scores per patch, stitched into a heat map."""
        return self.manifest.kind == manifest_pb2.MODEL_KIND_CLASSIFIER

    @property
    def uses_percentiles(self) -> bool:
        """The model normalises each image by per-channel percentiles sent with the stream."""
        return self.range_inputs is not None

    @property
    def channels(self) -> int:
        return self.image.channels

    @property
    def outputs(self) -> list[manifest_pb2.TensorSpec]:
        return list(self.manifest.outputs)

    @property
    def tiling(self) -> manifest_pb2.Tiling:
        return self.manifest.tiling

    @property
    def halo(self) -> int:
        return self.manifest.tiling.halo

    @property
    def tile_size(self) -> int:
        return self.manifest.tiling.tile_size

    @property
    def has_global_ops(self) -> bool:
        return self.manifest.tiling.has_global_ops

    def crop_is_exact(self, halo: int | None = None) -> bool:
        """Whether crop stitching with `halo` (default: the measured one) reproduces whole-image inference."""
        t = self.manifest.tiling
        return not t.has_global_ops and t.receptive_radius <= (t.halo if halo is None else halo)
