"""`adu benchmark latency`: what do prompts and InstaPG cost at inference?

Times ONNX Runtime on (a) the ADU graph and (b) the same backbone exported without prompts
or InstaPG (same wrapper, same four outputs), at batch 1 and 8, on every available
execution provider. The two sessions are timed alternately, call by call, so load from
other processes on a shared machine hits both alike. Reports median and p90 per call and
the ratio of medians (a)/(b). A bundle with a texture head also gets the head's own time
(numpy on the CPU, on crops at its larger size), which the node adds to (a).

Two sources: a bundle (its model.onnx, and its source checkpoint for (b)), or
`--clip NAME --random-weights` for a synthetic ADU at real CLIP size (8 prompt tokens,
depth 9, InstaPG at block 9, 7 classes, 4 domains), since no weights can be downloaded here.
"""
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# The paper's configuration, used for --random-weights.
SYNTHETIC_PROMPTS = dict(tokens=8, depth=9, instapg=True, instapg_layer=9)
SYNTHETIC_CLASSES, SYNTHETIC_DOMAINS = 7, 4


def available_providers(requested: Optional[Sequence[str]] = None) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"provider(s) {', '.join(missing)} not available here "
                             f"(available: {', '.join(available)})")
        return list(requested)
    return [p for p in PROVIDER_ORDER if p in available]


def _session(path, provider: str):
    import onnxruntime as ort

    # Fall back to CPU for any node the accelerator provider does not take.
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), providers=providers)


def time_alternating(session_a, session_b, images: np.ndarray, warmup: int,
                     repeats: int) -> Dict[str, np.ndarray]:
    """Per-call wall times (ms) of two sessions on the same input, interleaved."""
    feeds = {"images": images}
    times = {"a": [], "b": []}
    for index in range(warmup + repeats):
        for key, session in (("a", session_a), ("b", session_b)):
            started = time.perf_counter()
            session.run(None, feeds)
            if index >= warmup:
                times[key].append((time.perf_counter() - started) * 1000)
    return {key: np.array(value) for key, value in times.items()}


def benchmark_pair(onnx_a, onnx_b, image_size: int, providers: Sequence[str],
                   batches: Sequence[int] = (1, 8), warmup: int = 5, repeats: int = 50,
                   seed: int = 0) -> dict:
    """Median/p90 ms per call of (a) and (b) per provider and batch, and median ratio."""
    rng = np.random.default_rng(seed)
    rows = []
    for provider in providers:
        session_a, session_b = _session(onnx_a, provider), _session(onnx_b, provider)
        for batch in batches:
            images = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
            log.info("timing %s batch %d: %d warm-up + %d calls each", provider, batch, warmup, repeats)
            times = time_alternating(session_a, session_b, images, warmup, repeats)
            row = {"provider": provider, "batch": batch}
            for key in ("a", "b"):
                row[f"{key}_median_ms"] = float(np.median(times[key]))
                row[f"{key}_p90_ms"] = float(np.percentile(times[key], 90))
            row["ratio"] = row["a_median_ms"] / row["b_median_ms"]
            rows.append(row)
    return {"warmup": warmup, "repeats": repeats, "rows": rows}


def _export_pair(adu_model, plain_model, image_size: int, mean, std, folder: Path):
    from .onnx_export import export_onnx

    paths = folder / "adu.onnx", folder / "plain.onnx"
    export_onnx(adu_model, paths[0], image_size, mean, std)
    export_onnx(plain_model, paths[1], image_size, mean, std)
    return paths


def bundle_latency(bundle_dir, providers=None, batches=(1, 8), warmup: int = 5,
                   repeats: int = 50) -> dict:
    """(a) the bundle's model.onnx vs (b) its source checkpoint's backbone without prompts."""
    from adu_perception.training.checkpoint import load_checkpoint, model_from_checkpoint
    from adu_perception.training.evaluate import zero_shot_model

    from .onnx_export import export_onnx

    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no manifest.json in {bundle_dir}: not a bundle")
    manifest = json.loads(manifest_path.read_text())
    checkpoint = manifest["source"]["checkpoint"]
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"the bundle's source checkpoint {checkpoint} is gone: the "
                                f"prompt-free comparison model is exported from it")
    payload = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(payload)
    size = manifest["input_size"]
    with tempfile.TemporaryDirectory(prefix="adu-latency-") as folder:
        plain = Path(folder) / "plain.onnx"
        log.info("exporting the same backbone without prompts/InstaPG for comparison")
        export_onnx(zero_shot_model(model).float(), plain, size, payload["mean"], payload["std"])
        result = benchmark_pair(bundle_dir / manifest["model_file"], plain, size,
                                available_providers(providers), batches, warmup, repeats)
    result["setup"] = {"source": str(bundle_dir), "input_size": size,
                       "prompt_config": payload["prompt_config"]}
    if manifest.get("texture"):
        from adu_perception.runtime.bundle import load_bundle

        result["texture"] = texture_latency(load_bundle(bundle_dir).texture, batches, warmup, repeats)
    return result


def texture_latency(head, batches=(1, 8), warmup: int = 5, repeats: int = 50, seed: int = 0) -> list:
    """Median/p90 ms per call of a texture head (runtime.texture) per batch."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        crops = rng.integers(0, 256, (batch, head.input_size, head.input_size, 3), dtype=np.uint8)
        times = []
        for index in range(warmup + repeats):
            started = time.perf_counter()
            head.probability(crops)
            if index >= warmup:
                times.append((time.perf_counter() - started) * 1000)
        rows.append({"batch": batch, "input_size": head.input_size, "median_ms": float(np.median(times)),
                     "p90_ms": float(np.percentile(times, 90))})
    return rows


def random_weights_latency(clip_name: str, providers=None, batches=(1, 8), warmup: int = 2,
                           repeats: int = 10) -> dict:
    """Synthetic ADU (paper configuration) on a random-weight open_clip image tower."""
    import open_clip
    import torch

    from adu_perception.training.model import AduModel, PromptConfig

    torch.manual_seed(0)
    try:
        clip = open_clip.create_model(clip_name, pretrained=None)
    except RuntimeError as error:
        raise ValueError(f"unknown open_clip model {clip_name!r}: {error}") from None
    visual = clip.visual.eval()
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    n_blocks = len(visual.transformer.resblocks)
    depth = min(SYNTHETIC_PROMPTS["depth"], n_blocks)
    prompts = PromptConfig(**{**SYNTHETIC_PROMPTS, "depth": depth, "instapg_layer": depth})
    class_embeddings = torch.randn(SYNTHETIC_CLASSES, visual.output_dim)
    adu = AduModel(visual, class_embeddings, 100.0, SYNTHETIC_DOMAINS, prompts).eval()
    plain = AduModel(visual, class_embeddings, 100.0, SYNTHETIC_DOMAINS, PromptConfig(0, 0)).eval()
    with tempfile.TemporaryDirectory(prefix="adu-latency-") as folder:
        log.info("exporting random-weight %s with and without prompts/InstaPG", clip_name)
        onnx_a, onnx_b = _export_pair(adu, plain, int(size), open_clip.OPENAI_DATASET_MEAN,
                                      open_clip.OPENAI_DATASET_STD, Path(folder))
        result = benchmark_pair(onnx_a, onnx_b, int(size), available_providers(providers), batches,
                                warmup, repeats)
    result["setup"] = {"source": f"{clip_name} (random weights)", "input_size": int(size),
                       "prompt_config": vars(prompts), "classes": SYNTHETIC_CLASSES,
                       "domains": SYNTHETIC_DOMAINS}
    return result


def format_table(result: dict) -> str:
    setup = result["setup"]
    lines = [f"latency of {setup['source']} ({setup['input_size']} px), ONNX Runtime, "
             f"{result['warmup']} warm-up + {result['repeats']} calls, ms per call",
             "(a) ADU graph (prompts + InstaPG)   (b) same backbone without prompts", "",
             "| provider | batch | (a) median | (a) p90 | (b) median | (b) p90 | ratio (a)/(b) |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['provider']} | {row['batch']} | {row['a_median_ms']:.2f} | "
                     f"{row['a_p90_ms']:.2f} | {row['b_median_ms']:.2f} | {row['b_p90_ms']:.2f} | "
                     f"{row['ratio']:.3f} |")
    for row in result.get("texture", []):
        lines.append(f"texture head (numpy, CPU, {row['input_size']} px crops), batch {row['batch']}: "
                     f"median {row['median_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms")
    return "\n".join(lines)
