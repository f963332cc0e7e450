"""TensorRT check on a GPU machine: parity with ONNX Runtime and latency of a bundle's engine.

    python -m adu_perception.export.trt_check --bundle B --images DIR [--precision fp16]

Builds (or reuses) the bundle's engine for this GPU, runs it and ONNX Runtime (CPU, fp32)
over real images from DIR, and requires top-1 agreement >= 99.5% (fp16). Then times the
engine at batch 1 and 8 (median and p90 of synchronised calls). Prints a JSON report; exit
status 1 when parity fails, 2 when it cannot run (no TensorRT/GPU, bad bundle).
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .engine import EngineError, build_engine, load_calibration_images

MIN_TOP1_AGREEMENT = 0.995


class TrtRunner:
    """Minimal TensorRT 10 execution of a bundle engine with torch CUDA buffers."""

    def __init__(self, plan_path, input_name: str = "images"):
        import tensorrt as trt
        import torch

        self.trt, self.torch = trt, torch
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT cannot load {plan_path}")
        self.context = self.engine.create_execution_context()
        self.input_name = input_name
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in self.names
                        if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def __call__(self, images: np.ndarray, copy_back: bool = True) -> dict:
        torch, trt = self.torch, self.trt
        batch = torch.from_numpy(np.ascontiguousarray(images)).cuda()
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        self.context.set_tensor_address(self.input_name, batch.data_ptr())
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.float16 if self.engine.get_tensor_dtype(name) == trt.float16 else torch.float32
            results[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, results[name].data_ptr())
        torch.cuda.current_stream().synchronize()  # input copy done before TensorRT reads it
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        if not copy_back:
            return {}
        return {name: value.float().cpu().numpy() for name, value in results.items()}


def time_calls(function, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def check(bundle_dir, images_dir, precision: str = "fp16", limit: int = 512,
          repeats: int = 100, warmup: int = 10) -> dict:
    from .onnx_export import compare_outputs, ort_session, run_onnx

    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    plan = build_engine(bundle_dir, precision=precision, max_batch=8,
                        calib_dir=images_dir if precision == "int8" else None)
    images = load_calibration_images(images_dir, manifest["input_size"], limit)
    reference = run_onnx(ort_session(bundle_dir / manifest["model_file"]), images, batch_size=8)
    runner = TrtRunner(plan, manifest["input_name"])
    chunks = [runner(images[i:i + 8]) for i in range(0, len(images), 8)]
    engine_out = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    parity = compare_outputs(engine_out, reference)
    timings = {}
    for batch in (1, 8):
        sample = images[:batch] if len(images) >= batch else np.repeat(images[:1], batch, 0)
        timings[f"batch{batch}"] = time_calls(lambda: runner(sample, copy_back=False), warmup, repeats)
    import torch
    return {"engine": plan.name, "precision": precision, "gpu": torch.cuda.get_device_name(0),
            "n_images": int(len(images)), "parity": parity,
            "parity_ok": parity["top1_agreement"] >= MIN_TOP1_AGREEMENT, "latency": timings}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adu_perception.export.trt_check",
                                     description="TensorRT parity (vs ONNX Runtime) and latency of a bundle")
    parser.add_argument("--bundle", required=True, help="bundle folder written by `adu export`")
    parser.add_argument("--images", required=True, help="folder of real images (searched recursively)")
    parser.add_argument("--precision", default="fp16", choices=("fp32", "fp16", "int8"),
                        help="engine precision (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=512, help="images used at most (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per batch size (default: %(default)s)")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = check(args.bundle, args.images, args.precision, args.limit, args.repeats)
    except (EngineError, FileNotFoundError, ValueError) as error:
        print(f"trt_check: error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if not report["parity_ok"]:
        print(f"trt_check: top-1 agreement {report['parity']['top1_agreement']:.2%} < "
              f"{MIN_TOP1_AGREEMENT:.1%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
