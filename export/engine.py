"""`adu engine`: a serialized TensorRT engine for a bundle, cached beside model.onnx.

An engine is only valid for the exact ONNX bytes, TensorRT version and GPU it was built
with, so all three (plus the precision) are in its file name and in a JSON sidecar:

    <bundle>/engine-<sha256[:12]>-trt<version>-<gpu-slug>-sm<major><minor>-<precision>.plan
    <bundle>/engine-...-<precision>.json   (onnx_sha256, tensorrt_version, gpu_name,
                                            compute_capability, precision, batch profile)

Naming and sidecar checks (`engine_filename`, `check_engine`, ...) live in
adu_perception.runtime.engines, where the runtime predictor looks engines up too. Nothing here
rebuilds an engine silently: a cached engine whose sidecar disagrees is refused unless
--force. This module imports no torch or tensorrt at the top: the naming and checking parts
are plain Python usable on an edge device.
"""
import datetime
import json
import logging
import time
from pathlib import Path
from typing import Tuple

# Naming and sidecar checks live in the torch-free runtime (the predictor needs them too).
from adu_perception.runtime.engines import (PRECISIONS, SIDECAR_KEYS, EngineError,  # noqa: F401
                                            check_engine, engine_filename, engine_keys, gpu_slug,
                                            sidecar_path)

log = logging.getLogger(__name__)

# Layers kept in fp32 in fp16/int8 engines: LayerNorm, softmax and reductions (L2 norm)
# overflow or lose too much in half precision.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")


def reuse_cached_engine(plan_path, expected: dict, batch_range: Tuple[int, int],
                        force: bool = False) -> bool:
    """True: a matching engine is cached, use it. False: build one (none there, or --force).
    A cached engine that does not match is refused, never silently replaced."""
    try:
        return check_engine(plan_path, expected, batch_range) and not force
    except EngineError as error:
        if force:
            log.warning("rebuilding (--force): %s", error)
            return False
        raise EngineError(f"{error}; pass --force to rebuild it") from None


def stale_engines(bundle_dir, current: str) -> list:
    """Engines in the bundle built for another model/TensorRT/GPU than `current` (any
    precision); reported, never deleted."""
    prefix = current.rsplit("-", 1)[0] + "-"  # everything but the precision
    return sorted(p.name for p in Path(bundle_dir).glob("engine-*.plan") if not p.name.startswith(prefix))


def _load_bundle(bundle_dir):
    """The validated bundle (runtime.bundle: manifest keys, sha256, graph I/O)."""
    from adu_perception.runtime.bundle import BundleError, load_bundle

    try:
        return load_bundle(bundle_dir)
    except BundleError as error:
        raise EngineError(str(error)) from None


def import_tensorrt():
    """tensorrt and the GPU it will build for, or EngineError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed (python package `tensorrt`): engines can "
                          "only be built on an NVIDIA GPU machine with TensorRT 10") from None
    try:
        import torch
        if not torch.cuda.is_available():
            raise EngineError("no CUDA GPU visible: TensorRT engines must be built on the GPU "
                              "that will run them")
        name = torch.cuda.get_device_name(0)
        capability = torch.cuda.get_device_capability(0)
    except ImportError:
        raise EngineError("torch with CUDA is needed to query the GPU and hold calibration "
                          "buffers") from None
    return trt, name, tuple(capability)


def calibration_files(folder) -> list:
    """The image files under an int8 calibration folder; EngineError when there are none."""
    from adu_perception.training.data import IMAGE_SUFFIXES

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EngineError(f"no images in calibration folder {folder}")
    return files


def load_calibration_images(folder, size: int, limit: int = 512):
    """uint8 NHWC images from a folder, resized/cropped the bundle's way (shorter side, bicubic,
    center crop)."""
    import numpy as np

    from adu_perception.runtime.images import resize_center_crop
    from adu_perception.training.data import read_rgb

    files = calibration_files(folder)
    images = [resize_center_crop(image, size) for image in map(read_rgb, files[:limit])
              if image is not None]
    if not images:
        raise EngineError(f"no readable images in calibration folder {folder}")
    return np.stack(images)


def _make_calibrator(trt, images, batch_size: int, cache_file: Path):
    """Entropy calibrator fed by uint8 images (the graph preprocesses them itself)."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.index = 0
            self.device_batch = None  # kept alive while TensorRT reads it

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            if self.index + batch_size > len(images):
                return None
            batch = images[self.index:self.index + batch_size]
            self.index += batch_size
            self.device_batch = torch.from_numpy(batch).cuda().contiguous()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def _pin_fp32_layers(trt, network) -> int:
    """Keep numerically sensitive layers in fp32 inside a reduced-precision engine."""
    kinds = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in kinds:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


def build_engine(bundle_dir, precision: str = "fp16", workspace_mib: int = 2048,
                 min_batch: int = 1, opt_batch: int = 1, max_batch: int = 8,
                 calib_dir=None, force: bool = False) -> Path:
    """Build (or reuse) the bundle's engine for this GPU; returns the .plan path."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineError(f"need 1 <= min-batch <= opt-batch <= max-batch, got "
                          f"{min_batch}, {opt_batch}, {max_batch}")
    if precision == "int8" and not calib_dir:
        raise EngineError("int8 needs --calib-dir with representative images")
    bundle = _load_bundle(bundle_dir)
    if precision == "int8":  # a wrong folder is named before TensorRT is even needed
        calibration_files(calib_dir)
    trt, gpu_name, capability = import_tensorrt()

    keys = engine_keys(bundle.model_sha256, trt.__version__, gpu_name, capability, precision)
    plan = bundle.path / engine_filename(bundle.model_sha256, trt.__version__, gpu_name,
                                         capability, precision)
    if reuse_cached_engine(plan, keys, (min_batch, max_batch), force):
        log.info("engine up to date: %s (pass --force to rebuild)", plan)
        return plan
    for name in stale_engines(bundle.path, plan.name):
        log.warning("other engine in the bundle (another model, TensorRT or GPU): %s", name)
    # read before TensorRT parses the model (minutes), after a cached engine was not reused
    calibration = load_calibration_images(calib_dir, bundle.input_size) if precision == "int8" else None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(bundle.model_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {bundle.model_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    size = bundle.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(bundle.input_name, (min_batch, size, size, 3), (opt_batch, size, size, 3),
                      (max_batch, size, size, 3))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("pinned %d LayerNorm/Softmax/reduction layers to fp32", _pin_fp32_layers(trt, network))
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        cache = plan.with_suffix(".calib")
        config.int8_calibrator = _make_calibrator(trt, calibration, min(8, max_batch), cache)
        config.set_calibration_profile(profile)
        log.info("int8 calibration on %d images from %s", len(calibration), calib_dir)

    log.info("building %s engine for %s (sm%d%d), batch %d..%d; this takes minutes",
             precision, gpu_name, *capability, min_batch, max_batch)
    started = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see its log above)")
    temporary = plan.with_suffix(".plan.tmp")
    temporary.write_bytes(bytes(serialized))
    sidecar = {**keys, "min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch,
               "workspace_mib": workspace_mib, "input_size": size,
               "build_seconds": round(time.time() - started, 1),
               "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    sidecar_path(plan).write_text(json.dumps(sidecar, indent=2) + "\n")
    temporary.replace(plan)  # the plan appears last, complete, with its sidecar beside it
    log.info("engine written: %s (%.0f s)", plan, sidecar["build_seconds"])
    return plan

