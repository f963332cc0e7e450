"""`adu train` and `adu evaluate`: train, score against zero-shot CLIP, write checkpoint,
reports and plots into one run folder."""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from .checkpoint import checkpoint_path, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Sample, load_images
from .evaluate import predict, score, write_reports, zero_shot_model
from .plots import plot_domain_accuracy, plot_feature_projection
from .trainer import train

log = logging.getLogger(__name__)


def evaluate_and_report(model, payload: dict, test_images: np.ndarray, classes: np.ndarray,
                        domains: np.ndarray, run_dir, zero_shot_outputs=None) -> dict:
    """Score the model and zero-shot CLIP on the run's test split; write JSON, markdown, PNGs."""
    run_dir = Path(run_dir)
    names = payload["domain_names"]
    memorized, forgotten = payload["memorized_domains"], payload["forgotten_domains"]
    outputs = predict(model, test_images, payload["mean"], payload["std"], desc="evaluate")
    if zero_shot_outputs is None:
        zero_shot_outputs = predict(zero_shot_model(model), test_images, payload["mean"],
                                    payload["std"], desc="evaluate zero-shot")
    metrics = score(outputs, classes, domains, names, memorized, forgotten)
    zero_shot = score(zero_shot_outputs, classes, domains, names, memorized, forgotten)
    config = payload["config"]
    metrics.update(method=config["method"], memorized_domains=memorized, forgotten_domains=forgotten,
                   shots=config["shots"], seed=config["seed"], n_test=int(len(classes)),
                   zero_shot=zero_shot)
    write_reports(run_dir, metrics)
    forget_label = ",".join(forgotten)
    plot_domain_accuracy(zero_shot["per_domain"], metrics["per_domain"], forgotten,
                         run_dir / "per_domain_accuracy.png",
                         f"{config['method']}: per-domain accuracy (forget {forget_label})")
    plot_feature_projection(zero_shot_outputs["embeddings"], outputs["embeddings"], domains, names,
                            run_dir / "feature_projection.png", seed=config["seed"])
    return metrics


def train_and_evaluate(config: TrainConfig, run_dir, resume: bool = False) -> dict:
    result = train(config, run_dir, resume=resume)
    payload, data = result["payload"], result["data"]
    classes, domains = data.labels("test")
    metrics = evaluate_and_report(result["model"], payload, data.test_images, classes, domains, run_dir)
    payload["metrics"] = {k: v for k, v in metrics.items() if k != "zero_shot"}
    payload["zero_shot_metrics"] = metrics["zero_shot"]
    save_checkpoint(checkpoint_path(run_dir), payload)
    log.info("Mem %.2f  For %.2f  H %.2f  (zero-shot H %.2f) -> %s", metrics["mem"], metrics["for"],
             metrics["h"], metrics["zero_shot"]["h"], Path(run_dir).resolve())
    return metrics


def load_split(payload: dict, split: str = "test", data_root=None, size: Optional[int] = None):
    """A run's images of one split ("train", "calibration" or "test"): (uint8 images, class
    ids, domain ids, kept samples), at the run's input size unless `size` is given."""
    root = Path(data_root or payload["config"]["data"])
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder of this run not found: {root} (pass --data)")
    classes, domains = payload["class_names"], payload["domain_names"]
    samples = []
    for relative in payload.get(f"{split}_files", []):
        domain, name, _ = relative.split("/", 2)
        samples.append(Sample(relative, classes.index(name), domains.index(domain)))
    missing = [s.path for s in samples if not (root / s.path).is_file()]
    if missing:  # scoring the rest would quietly give other numbers than the run's
        raise FileNotFoundError(f"{len(missing)} of the {len(samples)} {split} images of this run are "
                                f"missing under {root} (e.g. {missing[0]}): wrong --data?")
    images, kept, _ = load_images(root, samples, size or payload["image_size"],
                                  payload["config"].get("workers", 2), f"load {split} images")
    return (images, np.array([s.class_index for s in kept], np.int64),
            np.array([s.domain_index for s in kept], np.int64), kept)


def evaluate_run(run_dir, data_root=None) -> dict:
    """Re-evaluate a finished run from its checkpoint on its own test split."""
    payload = load_checkpoint(run_dir)
    if not payload.get("complete"):
        raise ValueError(f"run {run_dir} has not finished training (epoch {payload['epoch']}); "
                         f"resume it with `adu train ... --resume`")
    model, _ = model_from_checkpoint(payload)
    images, classes, domains, _ = load_split(payload, "test", data_root)
    return evaluate_and_report(model, payload, images, classes, domains, run_dir)
