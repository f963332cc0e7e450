"""Run a bundle: uint8 RGB batches in, the four model outputs out (NanoOWL-style predictor).

    predictor = Predictor(load_bundle("bundles/x"), backend="auto")
    outputs = predictor.predict(batch)           # {"probs": [N, C], "domain_probs": ..., ...}
    decisions = predictor.classify(batch)        # [Decision] with the bundle's thresholds
                                                 # (and its open-set bank, when it has one)
    decisions = predictor.classify_crops(crops)  # RGB crops of any size: resized here, also
                                                 # at the texture head's size when it has one

Backends:
- onnxruntime-cpu / onnxruntime-cuda / onnxruntime-tensorrt: ONNX Runtime with that
  execution provider (an explicit choice that ONNX Runtime cannot honour is an error, not a
  silent CPU fallback);
- tensorrt: a serialized TensorRT 10 engine that `adu engine` wrote beside the bundle,
  matched to this model, TensorRT version and GPU (never built here at start);
- auto: tensorrt if a matching engine, TensorRT and a GPU are all present, else ONNX Runtime
  with TensorRT/CUDA providers if usable, else CPU. `predictor.backend` says what was chosen.

No torch anywhere: GPU memory for the TensorRT backend comes from cuda-python.
"""
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .decision import Decision, decide, describe, is_threshold
from .engines import EngineError, check_engine, engine_filename, engine_keys
from .images import preprocess

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
ORT_PROVIDER = {"onnxruntime-cpu": "CPUExecutionProvider",
                "onnxruntime-cuda": "CUDAExecutionProvider",
                "onnxruntime-tensorrt": "TensorrtExecutionProvider"}
# `auto` without a usable engine: the first of these whose provider ONNX Runtime has, else CPU.
AUTO_GPU_BACKENDS = ("onnxruntime-tensorrt", "onnxruntime-cuda")
# Engine precisions tried in this order when none is asked for (fp16 is `adu engine`'s default).
ENGINE_PRECISIONS = ("fp16", "fp32", "int8")


class BackendError(RuntimeError):
    """The requested backend cannot run here (missing package, GPU or engine)."""


class Predictor:
    def __init__(self, bundle, backend: str = "auto", threads: int = 0,
                 precision: Optional[str] = None):
        """bundle: a Bundle or a bundle folder. threads: ONNX Runtime intra-op threads (0 =
        its default). precision: TensorRT engine precision to use (default: any that matches)."""
        self.bundle: Bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if precision is not None and precision not in ENGINE_PRECISIONS:
            raise BackendError(f"unknown engine precision {precision!r}; choose one of "
                               f"{', '.join(ENGINE_PRECISIONS)}")
        self.requested = backend
        self._run, self.backend, self.detail = self._open(backend, threads, precision)
        log.info("inference backend: %s (%s)", self.backend, self.detail)
        self._check_output_widths()

    # -- public -----------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """uint8 [N, S, S, 3] RGB (S = bundle.input_size) -> {output name: float32 array}."""
        size = self.bundle.input_size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 \
                or images.ndim != 4 or images.shape[1:] != (size, size, 3) or len(images) == 0:
            shape = getattr(images, "shape", None)
            dtype = getattr(images, "dtype", type(images).__name__)
            raise ValueError(f"predict needs uint8 [N>=1, {size}, {size}, 3], got {dtype} {shape}")
        return self._run(np.ascontiguousarray(images))

    def classify_crops(self, crops, confidence: Optional[float] = None,
                       forgotten_domain: Optional[float] = None, top_k: int = 3,
                       regions=None, min_real_similarity: Optional[float] = None) -> List[Decision]:
        """classify for RGB crops of any size (uint8 [H, W, 3] each): each is resized and
        centre-cropped to the input size and, with a texture head, to its larger size too."""
        if len(crops) == 0:
            return []
        texture = self.bundle.texture
        return self.classify(preprocess(crops, self.bundle.input_size), confidence, forgotten_domain,
                             top_k, regions, min_real_similarity,
                             texture_images=None if texture is None else preprocess(crops, texture.input_size))

    def classify(self, images: np.ndarray, confidence: Optional[float] = None,
                 forgotten_domain: Optional[float] = None, top_k: int = 3,
                 regions=None, min_real_similarity: Optional[float] = None,
                 texture_images: Optional[np.ndarray] = None) -> List[Decision]:
        """predict + the decision rule (bundle thresholds unless given) -> one Decision each.
        With an open-set bank in the bundle, real_similarity comes from the `embeddings` output;
        without one the "unfamiliar" rule is off and min_real_similarity cannot be given.
        With a texture head, texture_images are the same crops at its input_size (uint8
        [N, Z, Z, 3]); classify_crops makes both."""
        bundle = self.bundle
        p_texture = None
        if bundle.texture is not None:
            if texture_images is None:
                raise ValueError(f"bundle {bundle.path} has a texture head: pass texture_images, the "
                                 f"same crops at {bundle.texture.input_size} px (or use classify_crops)")
            if len(texture_images) != len(images):
                raise ValueError(f"texture_images holds {len(texture_images)} crops, images {len(images)}")
            p_texture = bundle.texture.probability(texture_images)
        elif texture_images is not None:
            raise ValueError(f"texture_images given, but bundle {bundle.path} has no texture head")
        if bundle.open_set is None and min_real_similarity is not None:
            raise ValueError(f"min_real_similarity given, but bundle {bundle.path} has no open-set "
                             f"memory bank ({bundle.notes})")
        for name, value, low in (("confidence", confidence, 0.0), ("forgotten_domain", forgotten_domain, 0.0),
                                 ("min_real_similarity", min_real_similarity, -1.0)):
            check_threshold(name, value, low)
        if regions is not None and len(regions) != len(images):
            raise ValueError(f"{len(regions)} regions given for {len(images)} images (one each)")
        outputs = self.predict(images)
        similarity = threshold = None
        if bundle.open_set is not None:
            similarity = bundle.open_set.similarity(outputs["embeddings"])
            threshold = (bundle.min_real_similarity_threshold if min_real_similarity is None
                         else min_real_similarity)
        decisions = decide(outputs["probs"], outputs["domain_probs"], bundle.forgotten_mask,
                           bundle.confidence_threshold if confidence is None else confidence,
                           bundle.forgotten_domain_threshold if forgotten_domain is None
                           else forgotten_domain, similarity, threshold, p_texture)
        return describe(outputs["probs"], outputs["domain_probs"], decisions, bundle.class_names,
                        bundle.domain_names, top_k=top_k, regions=regions)

    # -- backend selection --------------------------------------------------------------------
    def _open(self, backend: str, threads: int, precision: Optional[str]):
        if backend == "tensorrt":
            return _open_tensorrt(self.bundle, precision)
        if backend in ORT_PROVIDER:
            return _open_onnxruntime(self.bundle, backend, threads)
        # auto: the fastest thing that really works here.
        if _engine_files(self.bundle):
            try:
                return _open_tensorrt(self.bundle, precision)
            except BackendError as error:
                log.warning("TensorRT engine not usable, trying ONNX Runtime: %s", error)
        import onnxruntime as ort

        available = ort.get_available_providers()
        for name in AUTO_GPU_BACKENDS:
            if ORT_PROVIDER[name] in available:
                try:
                    return _open_onnxruntime(self.bundle, name, threads)
                except BackendError as error:
                    log.warning("%s not usable, trying the next backend: %s", name, error)
        return _open_onnxruntime(self.bundle, "onnxruntime-cpu", threads)

    def _check_output_widths(self) -> None:
        """One warm-up run; also catches output widths the graph left symbolic, outputs that
        are not float, and a model that gives NaN or inf for a plain black image."""
        size = self.bundle.input_size
        outputs = self._run(np.zeros((1, size, size, 3), np.uint8))
        for name, values in outputs.items():
            if not np.issubdtype(np.asarray(values).dtype, np.floating):
                raise BundleError(f"{self.bundle.model_path}: output {name} is {values.dtype}, not float")
            if not np.isfinite(values).all():
                raise BackendError(f"{self.bundle.model_path}: output {name} holds NaN or inf for a "
                                   f"black image on {self.backend} (numerical overflow or a damaged graph)")
        expected = {"probs": len(self.bundle.class_names), "logits": len(self.bundle.class_names),
                    "domain_probs": len(self.bundle.domain_names),
                    "embeddings": self.bundle.embedding_dim}
        for name, width in expected.items():
            if outputs[name].shape != (1, width):
                raise BundleError(f"{self.bundle.model_path}: output {name} has shape "
                                  f"{outputs[name].shape} for one image, the manifest implies "
                                  f"(1, {width})")


def check_threshold(name: str, value, low: float = 0.0) -> None:
    """A threshold given in place of the bundle's: None, or a number in [low, 1] (ValueError)."""
    if value is not None and not is_threshold(value, low):
        raise ValueError(f"{name} threshold must be a number in [{low:g}, 1], got {value!r}")


def _open_onnxruntime(bundle: Bundle, backend: str, threads: int) -> Tuple[Callable, str, str]:
    import onnxruntime as ort

    provider = ORT_PROVIDER[backend]
    available = ort.get_available_providers()
    if provider not in available:
        raise BackendError(f"backend {backend} needs ONNX Runtime's {provider}, which this "
                           f"onnxruntime {ort.__version__} lacks (it has {', '.join(available)}); "
                           f"install onnxruntime-gpu on a CUDA machine or use onnxruntime-cpu")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own warnings duplicate what we report
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    if provider == "TensorrtExecutionProvider":
        # ORT builds its TensorRT engine on first use; cache it so only the first start pays.
        providers = [(provider, {"trt_engine_cache_enable": True,
                                 "trt_engine_cache_path": str(_ort_trt_cache(bundle))}),
                     "CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(bundle.model_path), options, providers=providers)
    except Exception as error:  # ORT raises its own exception types for load failures
        raise BackendError(f"ONNX Runtime cannot load {bundle.model_path} with {provider}: "
                           f"{error}") from None
    if session.get_providers()[0] != provider:
        raise BackendError(f"{provider} could not be initialised (no GPU or CUDA libraries?); "
                           f"ONNX Runtime fell back to {session.get_providers()[0]}")
    names = list(bundle.output_names)

    def run(images: np.ndarray) -> Dict[str, np.ndarray]:
        values = session.run(names, {bundle.input_name: images})
        return dict(zip(names, values))

    return run, backend, f"onnxruntime {ort.__version__}, providers {session.get_providers()}"


def _ort_trt_cache(bundle: Bundle) -> Path:
    folder = bundle.path / "ort_trt_cache"
    if not os.access(bundle.path, os.W_OK):
        folder = Path.home() / ".cache" / "adu_perception" / f"ort_trt_{bundle.model_sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- TensorRT engine backend ---------------------------------------------------------------------
# VERIFIED ONLY ON A GPU MACHINE WITH TENSORRT 10 + cuda-python: the CPU CI here cannot run
# it (tests only check that it refuses cleanly). Kept deliberately small.

def _engine_files(bundle: Bundle) -> List[Path]:
    """Engines in the bundle built from this model (any TensorRT, GPU, precision)."""
    return sorted(bundle.path.glob(f"engine-{bundle.model_sha256[:12]}-*.plan"))


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("backend tensorrt needs the `tensorrt` Python package (TensorRT 10) "
                           "on an NVIDIA GPU machine; use onnxruntime-cpu here") from None
    return trt


def _import_cudart():
    """cuda-python's runtime API (GPU memory and streams without torch)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendError("backend tensorrt needs cuda-python for GPU memory "
                               "(pip install cuda-python)") from None
    return cudart


def _cuda_call(cudart, result):
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA call failed: {cudart.cudaGetErrorName(error)[1]}")
    return values[0] if len(values) == 1 else values


def _gpu(cudart) -> Tuple[str, Tuple[int, int]]:
    try:
        count = _cuda_call(cudart, cudart.cudaGetDeviceCount())
    except BackendError as error:
        raise BackendError(f"no usable CUDA GPU for backend tensorrt ({error})") from None
    if count < 1:
        raise BackendError("no CUDA GPU visible for backend tensorrt")
    props = _cuda_call(cudart, cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.split("\x00")[0].strip(), (int(props.major), int(props.minor))


def find_engine(bundle: Bundle, tensorrt_version: str, gpu_name: str,
                capability: Tuple[int, int], precision: Optional[str] = None) -> Path:
    """The bundle's engine for this model + TensorRT + GPU, or BackendError explaining why not.
    Naming and sidecar checks: runtime/engines.py (shared with `adu engine`)."""

    for candidate in ([precision] if precision else ENGINE_PRECISIONS):
        plan = bundle.path / engine_filename(bundle.model_sha256, tensorrt_version, gpu_name,
                                             capability, candidate)
        keys = engine_keys(bundle.model_sha256, tensorrt_version, gpu_name, capability, candidate)
        try:
            if check_engine(plan, keys):
                return plan
        except EngineError as error:
            raise BackendError(str(error)) from None
    present = [p.name for p in sorted(bundle.path.glob("engine-*.plan"))]
    found = (f"present engines {present} were built for another model, TensorRT or GPU"
             if present else "no engine files present")
    raise BackendError(
        f"no {precision or 'matching'} TensorRT engine in {bundle.path} for model "
        f"{bundle.model_sha256[:12]}, TensorRT {tensorrt_version}, {gpu_name} "
        f"sm{capability[0]}{capability[1]} ({found}); build it on this machine with "
        f"`adu engine --bundle {bundle.path}` (engines are never built at start)")


def _open_tensorrt(bundle: Bundle, precision: Optional[str]) -> Tuple[Callable, str, str]:
    trt = _import_tensorrt()
    cudart = _import_cudart()
    gpu_name, capability = _gpu(cudart)
    plan = find_engine(bundle, trt.__version__, gpu_name, capability, precision)
    runner = _TensorRTRunner(trt, cudart, plan, bundle)
    return runner, "tensorrt", f"TensorRT {trt.__version__}, {plan.name} on {gpu_name}"


class _TensorRTRunner:
    """execute_async_v3 with device buffers from cudaMalloc (grown on demand, reused)."""

    def __init__(self, trt, cudart, plan: Path, bundle: Bundle):
        self.trt, self.cudart, self.input_name = trt, cudart, bundle.input_name
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT {trt.__version__} cannot deserialize {plan}")
        self.context = self.engine.create_execution_context()
        self.outputs = [n for n in (self.engine.get_tensor_name(i)
                                    for i in range(self.engine.num_io_tensors))
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        # The optimisation profile's max batch: larger batches are split.
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        self.buffers: Dict[str, Tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda_call(self.cudart, self.cudart.cudaFree(pointer))
            pointer = _cuda_call(self.cudart, self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (pointer, nbytes)
        return int(pointer)

    def __call__(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        if len(images) > self.max_batch:
            parts = [self(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        cudart, trt = self.cudart, self.trt
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.context.set_input_shape(self.input_name, tuple(images.shape))
        pointer = self._device(self.input_name, images.nbytes)
        _cuda_call(cudart, cudart.cudaMemcpyAsync(pointer, images.ctypes.data, images.nbytes, h2d,
                                                  self.stream))
        self.context.set_tensor_address(self.input_name, pointer)
        host = {}
        for name in self.outputs:
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            host[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype)
            self.context.set_tensor_address(name, self._device(name, host[name].nbytes))
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execute_async_v3 failed")
        for name, array in host.items():
            _cuda_call(cudart, cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name][0],
                                                      array.nbytes, d2h, self.stream))
        _cuda_call(cudart, cudart.cudaStreamSynchronize(self.stream))
        return {name: array.astype(np.float32, copy=False) for name, array in host.items()}

    def __del__(self):
        for pointer, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(pointer)
