"""TensorRT engine naming and sidecar checks, shared by the runtime (which looks engines up)
and the export stage (`adu engine`, which builds them). Plain Python: no torch, no tensorrt.

An engine is only valid for the exact ONNX bytes, TensorRT version and GPU it was built
with, so all three (plus the precision) are in its file name and in a JSON sidecar:

    <bundle>/engine-<sha256[:12]>-trt<version>-<gpu-slug>-sm<major><minor>-<precision>.plan
    <bundle>/engine-...-<precision>.json   (onnx_sha256, tensorrt_version, gpu_name,
                                            compute_capability, precision, batch profile)
"""
import json
import re
from pathlib import Path
from typing import Optional, Tuple

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_KEYS = ("onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability", "precision")


class EngineError(RuntimeError):
    """An engine cannot be built here, or a cached engine does not belong to this bundle/GPU."""


def gpu_slug(gpu_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (safe in a file name)."""
    return re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"


def engine_filename(onnx_sha256: str, tensorrt_version: str, gpu_name: str,
                    compute_capability: Tuple[int, int], precision: str) -> str:
    """The cache name of an engine: engine-<sha[:12]>-trt<ver>-<gpu>-sm<MAJ><MIN>-<prec>.plan"""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256 or ""):
        raise ValueError(f"not a sha256 hex digest: {onnx_sha256!r}")
    major, minor = compute_capability
    return (f"engine-{onnx_sha256[:12]}-trt{tensorrt_version}-{gpu_slug(gpu_name)}"
            f"-sm{major}{minor}-{precision}.plan")


def sidecar_path(plan_path) -> Path:
    return Path(plan_path).with_suffix(".json")


def engine_keys(onnx_sha256: str, tensorrt_version: str, gpu_name: str,
                compute_capability: Tuple[int, int], precision: str) -> dict:
    return {"onnx_sha256": onnx_sha256, "tensorrt_version": str(tensorrt_version),
            "gpu_name": gpu_name, "compute_capability": [int(v) for v in compute_capability],
            "precision": precision}


def check_engine(plan_path, expected: dict, batch_range: Optional[Tuple[int, int]] = None) -> bool:
    """Is the cached engine at plan_path the one `expected` (engine_keys) describes?

    False: no engine there yet. True: present and matching. Raises EngineError naming the
    differing keys when an engine exists but its sidecar is missing or disagrees (copied
    from another GPU, another TensorRT, another model) or its batch range is too narrow.
    """
    plan_path = Path(plan_path)
    if not plan_path.exists():
        return False
    sidecar = sidecar_path(plan_path)
    try:
        recorded = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise EngineError(f"engine {plan_path.name} has no sidecar {sidecar.name}: cannot tell "
                          f"what it was built for") from None
    except json.JSONDecodeError as error:
        raise EngineError(f"engine sidecar {sidecar} is not valid JSON: {error}") from None
    different = [f"{key}: engine has {recorded.get(key)!r}, need {expected[key]!r}"
                 for key in SIDECAR_KEYS if recorded.get(key) != expected[key]]
    if different:
        raise EngineError(f"engine {plan_path.name} does not match this bundle/GPU ("
                          + "; ".join(different) + ")")
    if batch_range is not None:
        low, high = recorded.get("min_batch", 1), recorded.get("max_batch", 1)
        if batch_range[0] < low or batch_range[1] > high:
            raise EngineError(f"engine {plan_path.name} covers batch {low}..{high}, need "
                              f"{batch_range[0]}..{batch_range[1]}")
    return True
