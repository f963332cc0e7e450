"""Evaluation of a trained (or zero-shot) model: per-domain accuracy, Mem/For/H, reports."""
import json
import logging
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .metrics import mem_for_h, per_domain_accuracy
from .model import AduModel, PromptConfig

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(model: AduModel, images: np.ndarray, mean, std, batch_size: int = 128,
            desc: str = None) -> Dict[str, np.ndarray]:
    """Run the model over uint8 NHWC images: probs, domain_probs, embeddings (numpy)."""
    from .trainer import to_model_input  # local import: trainer imports this module's users

    model = model.eval().with_folded_text()  # text features once, not per batch
    device = model.logit_scale.device
    outputs = {"probs": [], "domain_probs": [], "embeddings": []}
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=desc is None,
                      leave=False):
        batch = torch.from_numpy(images[start:start + batch_size]).to(device)
        out = model(to_model_input(batch, mean, std))
        outputs["probs"].append(out["logits"].softmax(-1).float().cpu())
        outputs["domain_probs"].append(out["domain_logits"].softmax(-1).float().cpu())
        outputs["embeddings"].append(out["embeddings"].float().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros((0,)) for k, v in outputs.items()}


def zero_shot_model(trained: AduModel) -> AduModel:
    """The frozen CLIP with no prompts, sharing the trained model's backbone and text cache."""
    model = AduModel(trained.encoder.visual, trained.class_embeddings, float(trained.logit_scale),
                     trained.domain_head.out_features, PromptConfig(tokens=0, depth=0))
    return model.to(trained.class_embeddings.device).eval()


def score(outputs: Dict[str, np.ndarray], classes: np.ndarray, domains: np.ndarray,
          domain_names: Sequence[str], memorized: Sequence[str], forgotten: Sequence[str]) -> dict:
    predictions = outputs["probs"].argmax(1)
    metrics = mem_for_h(predictions, classes, domains,
                        [domain_names.index(d) for d in memorized],
                        [domain_names.index(d) for d in forgotten])
    metrics["per_domain"] = per_domain_accuracy(predictions, classes, domains, domain_names)
    return metrics


def markdown_report(metrics: dict) -> str:
    domains = list(metrics["per_domain"])
    lines = [f"# ADU run: method `{metrics['method']}`, forget {', '.join(metrics['forgotten_domains'])}",
             "", "| model | Mem | For | H | " + " | ".join(f"acc {d}" for d in domains) + " |",
             "|---" * (4 + len(domains)) + "|"]
    for label, m in (("zero-shot CLIP", metrics.get("zero_shot")), (metrics["method"], metrics)):
        if m:
            accs = " | ".join(f"{m['per_domain'][d]:.2f}" for d in domains)
            lines.append(f"| {label} | {m['mem']:.2f} | {m['for']:.2f} | {m['h']:.2f} | {accs} |")
    lines += ["", f"Test images: {metrics['n_test']} (few-shot training: {metrics['shots']} per "
              f"class and domain, seed {metrics['seed']}). Values in %."]
    return "\n".join(lines) + "\n"


def write_reports(run_dir, metrics: dict) -> None:
    run_dir = Path(run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / "metrics.md").write_text(markdown_report(metrics))
