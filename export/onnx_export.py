"""`adu export`: a trained run -> a bundle (model.onnx + manifest.json, see docs/bundle.md).

The graph takes uint8 RGB NHWC images and does the CLIP preprocessing itself, so a consumer
only resizes and crops. Prompts, InstaPG and the class-text embeddings are graph constants;
the text tower is never part of the graph: learned text prompts are run once and their class
text features folded in. Export is checked against the PyTorch model on the run's own test
images and refused (no bundle written) when ONNX Runtime disagrees. Decision thresholds are
chosen on the run's calibration images and their rates reported on its test images.
The open-set memory bank (memory_bank.npy) holds the graph's embeddings of the run's training
images of the memorised domains, each also horizontally flipped. The texture head
(texture_head.npz, `texture_head=True`) is fitted on the run's training images read at
zoom x the input size (training.texture_head); it is numpy at run time, not in the graph.
"""
import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from adu_perception.runtime.bundle import sha256_file
from adu_perception.runtime.texture import STEM_STATISTICS

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("probs", "logits", "domain_probs", "embeddings")
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "adu-bundle"
BUNDLE_FORMAT_VERSION = 3
BANK_FILE = "memory_bank.npy"
TEXTURE_FILE = "texture_head.npz"
OPEN_SET_SCORE = "knn_cosine"
OPEN_SET_K = 5
MIN_OPSET = 17
# fp32 parity gate between ONNX Runtime (CPU) and PyTorch on real images.
PARITY_TOLERANCE = 1e-4
# Parameter names that only open_clip's text tower has.
TEXT_TOWER_MARKERS = ("token_embedding", "text_projection", "ln_final", "text.")


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported graph is not what the bundle promises."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond tolerance: the bundle is not written."""


class ExportModule(nn.Module):
    """uint8 RGB NHWC -> (probs, logits, domain_probs, embeddings); preprocessing in-graph.

    The arithmetic follows training.trainer.to_model_input step by step (permute, float,
    /255, -mean, /std) so the graph sees the same floats as training and evaluation.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        out = self.model(x)
        logits = out["logits"]
        return logits.softmax(-1), logits, out["domain_logits"].softmax(-1), out["embeddings"]


@contextlib.contextmanager
def mha_fastpath_disabled():
    """nn.MultiheadAttention's eval-mode fast path is a fused kernel with no ONNX mapping;
    trace the plain math path instead (numerically the same function, checked by parity)."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the bundle needs opset >= {MIN_OPSET} "
                          f"(LayerNormalization)")


def export_onnx(model: nn.Module, path, image_size: int, mean, std, opset: int = MIN_OPSET) -> Path:
    """Trace `model` (an AduModel; learned text prompts folded to constants first) inside
    ExportModule to `path` (fp32, dynamic batch)."""
    check_opset(opset)
    path = Path(path)
    # fp32 throughout: open_clip may hold fp16 weights, and fp16 LayerNorm loses parity.
    wrapper = ExportModule(model.with_folded_text(), mean, std).float().eval()
    # Batch 2 for tracing so no shape gets specialised to 1; the axis is declared dynamic.
    dummy = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with torch.no_grad(), mha_fastpath_disabled(), warnings.catch_warnings():
        # The tracer warns about Python control flow on shapes (prompt depth, block index):
        # those are fixed per model, so the traced graph is right for every batch size.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # dynamo=False is deliberate (checked here for open_clip's ViT); silence its notice.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic, do_constant_folding=True)
        widths = [int(t.shape[-1]) for t in wrapper(dummy)]
    _set_output_widths(path, widths)
    return path


def _set_output_widths(path: Path, widths: Sequence[int]) -> None:
    """The tracer leaves some output widths symbolic (e.g. the embedding size after the L2
    norm); write the known sizes in, so the graph itself states the class, domain and
    embedding counts a loader checks against the manifest."""
    import onnx

    model = onnx.load(str(path))
    for output, width in zip(model.graph.output, widths):
        last = output.type.tensor_type.shape.dim[-1]
        if not last.HasField("dim_value"):
            last.dim_value = width  # replaces the dim_param (oneof field)
    onnx.save(model, str(path))


def check_graph(path, image_size: int, n_classes: int, n_domains: int, embedding_dim: int,
                max_parameters: Optional[int] = None) -> "onnx.ModelProto":
    """Full ONNX checker, the bundle's I/O contract, and no text tower inside."""
    import onnx

    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path} fails the ONNX checker: {error}") from None
    inputs = [i for i in model.graph.input]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f"graph inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise ExportError("graph input 'images' is not uint8")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor_type.shape.dim]
    if dims[1:] != [image_size, image_size, 3] or not isinstance(dims[0], str):
        raise ExportError(f"graph input shape {dims}, expected [batch, {image_size}, {image_size}, 3]")
    expected = {"probs": n_classes, "logits": n_classes, "domain_probs": n_domains,
                "embeddings": embedding_dim}
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    if list(outputs) != list(OUTPUT_NAMES):
        raise ExportError(f"graph outputs are {list(outputs)}, expected {list(OUTPUT_NAMES)}")
    for name, width in expected.items():
        if outputs[name][-1] != width:
            raise ExportError(f"output {name} has width {outputs[name][-1]}, expected {width}")
    text_names = [t.name for t in model.graph.initializer
                  if any(marker in t.name for marker in TEXT_TOWER_MARKERS)]
    if text_names:
        raise ExportError(f"graph holds text-tower weights: {text_names[:3]}")
    if max_parameters is not None:
        stored = initializer_elements(model)
        if stored > max_parameters:
            raise ExportError(f"graph stores {stored} constant elements, more than the "
                              f"{max_parameters} of the image model: something extra was traced in")
    return model


def initializer_elements(model) -> int:
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer))


def module_elements(module: nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def ort_session(path, providers: Sequence[str] = ("CPUExecutionProvider",)):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=list(providers))


def run_onnx(session, images: np.ndarray, batch_size: int = 32,
             desc: Optional[str] = None) -> Dict[str, np.ndarray]:
    """All four outputs of a bundle graph over uint8 NHWC images, batched."""
    from tqdm import tqdm

    chunks = {name: [] for name in OUTPUT_NAMES}
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        values = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[start:start + batch_size]})
        for name, value in zip(OUTPUT_NAMES, values):
            chunks[name].append(value)
    return {name: np.concatenate(v) for name, v in chunks.items()}


def parity_sample(domains: np.ndarray, memorized_ids: Sequence[int], forgotten_ids: Sequence[int],
                  n: int, seed: int = 0) -> np.ndarray:
    """Up to n indices, half from memorized and half from forgotten domains (seeded)."""
    rng = np.random.default_rng(seed)
    memorized = np.flatnonzero(np.isin(domains, memorized_ids))
    forgotten = np.flatnonzero(np.isin(domains, forgotten_ids))
    n_forgotten = min(len(forgotten), max(n // 2, n - len(memorized)))
    n_memorized = min(len(memorized), n - n_forgotten)
    chosen = np.concatenate([rng.choice(memorized, n_memorized, replace=False),
                             rng.choice(forgotten, n_forgotten, replace=False)])
    return np.sort(chosen)


def compare_outputs(onnx_out: Dict[str, np.ndarray], torch_out: Dict[str, np.ndarray]) -> dict:
    def max_diff(name):
        return float(np.max(np.abs(onnx_out[name] - torch_out[name]))) if len(onnx_out[name]) else 0.0

    agreement = onnx_out["probs"].argmax(1) == torch_out["probs"].argmax(1)
    return {"max_abs_diff_probs": max_diff("probs"),
            "max_abs_diff_domain_probs": max_diff("domain_probs"),
            "max_abs_diff_embeddings": max_diff("embeddings"),
            "top1_agreement": float(agreement.mean()) if len(agreement) else 1.0}


def check_parity(session, model: nn.Module, images: np.ndarray, mean, std,
                 tolerance: float = PARITY_TOLERANCE) -> dict:
    """ONNX Runtime vs the PyTorch model (the training evaluation path) on the same images."""
    from adu_perception.training.evaluate import predict

    reference = predict(model, images, mean, std, batch_size=32)
    figures = compare_outputs(run_onnx(session, images, batch_size=16), reference)
    figures = {"provider": session.get_providers()[0], "n_images": int(len(images)),
               "tolerance": tolerance, **figures}
    problems = []
    for key in ("max_abs_diff_probs", "max_abs_diff_domain_probs"):
        if not figures[key] <= tolerance:
            problems.append(f"{key} = {figures[key]:.3g} > {tolerance:g}")
    if figures["top1_agreement"] < 1.0:
        problems.append(f"top-1 agreement {figures['top1_agreement']:.2%} < 100%")
    if problems:
        raise ParityError("ONNX Runtime disagrees with PyTorch on the run's test images ("
                          + "; ".join(problems) + "): bundle not written")
    return figures


def versions() -> dict:
    import onnx
    import onnxruntime
    import open_clip

    from adu_perception import __version__

    return {"adu_perception": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "open_clip": open_clip.__version__}


def build_manifest(payload: dict, checkpoint, opset: int, model_sha256: str, thresholds: dict,
                   parity: dict, open_set: Optional[dict] = None, texture: Optional[dict] = None) -> dict:
    """manifest.json exactly as docs/bundle.md lays it out (open_set None: no bank; texture
    None: no texture head)."""
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "model_sha256": model_sha256,
        "opset": opset,
        "input_name": INPUT_NAME,
        "output_names": list(OUTPUT_NAMES),
        "input_size": int(payload["image_size"]),
        "embedding_dim": int(payload["class_embeddings"].shape[1]),
        # Same resize + crop as runtime.images.resize_center_crop; normalisation is in-graph.
        "preprocessing": {
            "color": "RGB", "dtype": "uint8", "layout": "NHWC",
            "resize": "shorter_side", "interpolation": "bicubic_up_area_down", "crop": "center",
            "mean": [float(v) for v in payload["mean"]], "std": [float(v) for v in payload["std"]],
            "normalization": "in_graph",
        },
        "class_names": list(payload["class_names"]),
        "domain_names": list(payload["domain_names"]),
        "memorized_domains": list(payload["memorized_domains"]),
        "forgotten_domains": list(payload["forgotten_domains"]),
        "open_set": open_set,
        "texture": texture,
        "thresholds": thresholds,
        "parity": parity,
        "source": {
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": sha256_file(checkpoint),
            "method": payload["config"]["method"],
            "clip": {"name": payload["clip"]["name"], "pretrained": payload["clip"].get("pretrained")},
            "metrics": payload.get("metrics") or {},
        },
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": versions(),
    }


def _publish(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished staging folder into place; an older bundle is replaced whole."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not overwrite:
        raise ExportError(f"{out_dir} already exists; choose another --out or pass --force")
    if not (out_dir / MANIFEST_FILE).is_file() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} exists and is not a bundle: refusing to replace it")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(run_dir, out_dir, opset: int = MIN_OPSET, parity_images: int = 64,
                  data_root=None, tolerance: float = PARITY_TOLERANCE, keep: float = 0.95,
                  overwrite: bool = False, progress: bool = True, open_set: bool = True,
                  open_set_k: int = OPEN_SET_K, texture_head: bool = False,
                  texture_zoom: int = 2, texture_artefacts: bool = True) -> Path:
    """Export a finished run to a bundle folder; returns its path.

    Parity is checked on `parity_images` test images (half memorized, half forgotten
    domains). Thresholds are chosen on the run's calibration images (neither trained on nor
    tested) through the graph, and the manifest reports their rates on the test images.
    open_set: write the memory bank (training images of the memorised domains and their
    flips, through the graph) and choose min_real_similarity too; False writes a bundle
    without a bank (the "unfamiliar" rule off), for comparison.
    texture_head: fit and write the texture head (crops read at texture_zoom x the input
    size; texture_artefacts: also on camera-artefact copies); the thresholds are then chosen
    with its score in rule 1.
    Nothing is left at `out_dir` unless every check passed.
    """
    from adu_perception.training.checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint
    from adu_perception.training.pipeline import load_split

    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ExportError(f"{out_dir} already exists; choose another --out or pass --force")
    # The options first: a bad one should not cost the minutes of loading and export below.
    check_opset(opset)
    if parity_images < 1:
        raise ExportError(f"parity_images {parity_images} must be >= 1 (the parity check needs images)")
    checkpoint = checkpoint_path(run_dir)
    payload = load_checkpoint(checkpoint)
    if not payload.get("complete"):
        raise ExportError(f"run {run_dir} has not finished training (epoch {payload.get('epoch')})")
    if not payload["config"].get("epochs") or payload["config"].get("method") == "zeroshot":
        log.warning("run %s trained nothing (method %s, %s epochs): its prompts and domain head are "
                    "as initialised, so the bundle's decisions are no ADU model's", run_dir,
                    payload["config"].get("method"), payload["config"].get("epochs"))
    model, _ = model_from_checkpoint(payload)
    model = model.float().eval().with_folded_text()
    mean, std, size = payload["mean"], payload["std"], int(payload["image_size"])
    domain_names = payload["domain_names"]
    memorized_ids = [domain_names.index(d) for d in payload["memorized_domains"]]
    forgotten_ids = [domain_names.index(d) for d in payload["forgotten_domains"]]

    if isinstance(open_set_k, bool) or int(open_set_k) != open_set_k or open_set_k < 1:
        raise ExportError(f"open-set k must be an integer >= 1, got {open_set_k!r}")
    if isinstance(texture_zoom, bool) or int(texture_zoom) != texture_zoom or texture_zoom < 1:
        raise ExportError(f"texture zoom must be an integer >= 1, got {texture_zoom!r}")
    test = load_split(payload, "test", data_root)
    calibration = load_split(payload, "calibration", data_root)
    zoomed = None
    if texture_head:
        from adu_perception.training.texture_head import fit_run_head, native_resolution_problem, stem_weight

        # Refused before anything is read at the larger size.
        problem = native_resolution_problem(_shorter_sides(payload, data_root), size * texture_zoom)
        if problem:
            raise ExportError(problem)
        zoomed = {split: load_split(payload, split, data_root, size * texture_zoom)
                  for split in ("train", "calibration", "test")}
        for split, images in (("calibration", calibration), ("test", test)):
            if len(zoomed[split][0]) != len(images[0]):
                raise ExportError(f"{split} images read at {size} px and {size * texture_zoom} px differ")
    if payload.get("rendered_domains"):  # a run trained with --rendered: its families in calibration too
        from adu_perception.training.rendered import with_rendered_copies, with_rendered_copies_at_two_sizes

        if zoomed is None:
            calibration = (*with_rendered_copies(payload, *calibration[:3]), calibration[3])
        else:
            images, drawn, classes, domains = with_rendered_copies_at_two_sizes(
                payload, calibration[0], zoomed["calibration"][0], *calibration[1:3])
            calibration = (images, classes, domains, calibration[3])
            zoomed["calibration"] = (drawn, classes, domains, calibration[3])
    train = load_split(payload, "train", data_root) if open_set else None
    if len(test[0]) == 0:
        raise ExportError(f"run {run_dir} has no readable test images to check the export on")
    if len(calibration[0]) == 0:
        raise ExportError(f"run {run_dir} has no readable calibration images to choose the "
                          f"thresholds on (train it with --calibration-shots >= 1)")
    if open_set and not np.isin(train[2], memorized_ids).any():
        raise ExportError(f"run {run_dir} has no readable training images of the memorised "
                          f"domains for the open-set memory bank (or export with --open-set off)")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the bundle is read by other users (node)
    try:
        onnx_path = staging / MODEL_FILE
        log.info("exporting ONNX (opset %d, %d px) from %s", opset, size, checkpoint)
        export_onnx(model, onnx_path, size, mean, std, opset)
        # Bound: the image model itself plus the two normalisation vectors.
        check_graph(onnx_path, size, len(payload["class_names"]), len(domain_names),
                    int(payload["class_embeddings"].shape[1]), max_parameters=module_elements(model) + 6)
        session = ort_session(onnx_path)

        images, _, domains, _ = test
        sample = parity_sample(domains, memorized_ids, forgotten_ids, parity_images)
        log.info("parity check on %d test images (ONNX Runtime CPU vs PyTorch)", len(sample))
        parity = check_parity(session, model, images[sample], mean, std, tolerance)
        log.info("parity: max |dprobs| %.2e, top-1 agreement %.1f%%", parity["max_abs_diff_probs"],
                 100 * parity["top1_agreement"])

        bank_section = bank = None
        if open_set:
            bank, bank_from = memory_bank(session, train, memorized_ids, domain_names, progress)
            np.save(staging / BANK_FILE, bank)
            bank_section = {"score": OPEN_SET_SCORE, "k": int(open_set_k), "bank_file": BANK_FILE,
                            "bank_sha256": sha256_file(staging / BANK_FILE),
                            "n_bank": int(len(bank)), "bank_from": bank_from}
            log.info("open-set memory bank: %s", bank_from)
        texture_section = p_texture = None
        if zoomed is not None:
            head = fit_run_head(payload, stem_weight(model), zoomed["train"][0], zoomed["train"][2],
                                texture_zoom, camera_artefacts=texture_artefacts)
            head.save(staging / TEXTURE_FILE)
            texture_section = {"score": STEM_STATISTICS, "file": TEXTURE_FILE,
                               "sha256": sha256_file(staging / TEXTURE_FILE), "zoom": int(texture_zoom),
                               "tile": size, "input_size": head.input_size, "fitted_on": head.fitted_on}
            p_texture = (head.probability(zoomed["calibration"][0]), head.probability(zoomed["test"][0]))
            log.info("texture head: %s", head.fitted_on)
        thresholds = calibrated_thresholds(session, calibration, test, memorized_ids,
                                           forgotten_ids, keep, progress, bank, int(open_set_k),
                                           p_texture)
        manifest = build_manifest(payload, checkpoint, opset, sha256_file(onnx_path), thresholds,
                                  parity, bank_section, texture_section)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("bundle written: %s", out_dir)
    return out_dir


def memory_bank(session, train, memorized_ids, domain_names, progress: bool = False):
    """float16 [2 M, E]: the graph's embeddings of the M training images of the memorised
    domains, then of the same images flipped left-right; and the manifest's bank_from text."""
    keep = np.isin(train[2], memorized_ids)
    images = train[0][keep]
    flipped = np.ascontiguousarray(images[:, :, ::-1])  # NHWC: axis 2 is the width
    embeddings = run_onnx(session, np.concatenate([images, flipped]),
                          desc="open-set bank: graph on training images" if progress else None)
    names = ", ".join(domain_names[i] for i in memorized_ids)
    bank_from = (f"embeddings (ONNX Runtime, stored float16) of the run's {len(images)} training "
                 f"images of the memorised domains ({names}), rows 0..{len(images) - 1}, then "
                 f"of the same images flipped horizontally: {2 * len(images)} rows")
    return embeddings["embeddings"].astype(np.float16), bank_from


def _shorter_sides(payload: dict, data_root) -> list:
    """Native shorter sides of the run's readable training files (before any resizing)."""
    from adu_perception.training.data import read_rgb

    root = Path(data_root or payload["config"]["data"])
    images = (read_rgb(root / relative) for relative in payload.get("train_files", []))
    return [min(image.shape[:2]) for image in images if image is not None]


def calibrated_thresholds(session, calibration, test, memorized_ids, forgotten_ids,
                          keep: float, progress: bool = False, bank: Optional[np.ndarray] = None,
                          k: int = OPEN_SET_K, p_texture=None) -> dict:
    """The manifest's `thresholds`: chosen on the calibration split's graph outputs, with the
    rates (memorized correct kept, forgotten suppressed) of the test split. With a memory bank
    (never holding calibration or test images) min_real_similarity is chosen as well; with
    p_texture (calibration, test scores of the texture head) rule 1 reads it too."""
    from adu_perception.runtime.open_set import real_similarity

    from .thresholds import choose_thresholds, items_for_rules, score_thresholds

    def outputs(split, name):
        return run_onnx(session, split[0], desc=f"thresholds: graph on {name} images" if progress else None)

    def similarity(out):
        # The float16 bank exactly as the runtime will load it.
        return None if bank is None else real_similarity(out["embeddings"], bank, k)

    calibration_out, test_out = outputs(calibration, "calibration"), outputs(test, "test")
    chosen = choose_thresholds(calibration_out["probs"], calibration_out["domain_probs"],
                               calibration[1], calibration[2], memorized_ids, forgotten_ids,
                               keep=keep, real_similarity=similarity(calibration_out),
                               p_texture=None if p_texture is None else p_texture[0])
    for_two_rules = items_for_rules(2, keep)
    if chosen["n_memorized_correct"] < for_two_rules:
        log.warning("only %d correct memorised-domain calibration predictions: with fewer than "
                    "%d only the forgotten-domain rule can be on (docs/bundle.md); train with "
                    "more --calibration-shots for the confidence and open-set rules",
                    chosen["n_memorized_correct"], for_two_rules)
    thresholds = score_thresholds(test_out["probs"], test_out["domain_probs"], test[1], test[2],
                                  memorized_ids, forgotten_ids, chosen["confidence"],
                                  chosen["forgotten_domain"], similarity(test_out),
                                  chosen["min_real_similarity"], None if p_texture is None else p_texture[1])
    thresholds.update(
        target_memorized_correct_kept=keep,
        chosen_on=f"{len(calibration[0])} calibration images of the run (ONNX Runtime outputs); "
                  f"rates on its {len(test[0])} test images",
        calibration={key: chosen[key] for key in (
            "memorized_correct_kept", "forgotten_suppressed", "n_memorized_correct",
            "n_memorized_correct_required", "n_forgotten", "n_forgotten_suppressed_unfamiliar",
            "n_forgotten_suppressed_texture")})
    log.info("thresholds: confidence %.2f, forgotten_domain %.2f, min_real_similarity %s (test: "
             "memorized correct kept %.1f%%, forgotten suppressed %.1f%%)", thresholds["confidence"],
             thresholds["forgotten_domain"], thresholds["min_real_similarity"],
             100 * thresholds["memorized_correct_kept"], 100 * thresholds["forgotten_suppressed"])
    return thresholds
