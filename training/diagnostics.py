"""`adu benchmark ddl-diagnostics`: does the Domain Disentangling Loss fit this backbone?

1. Loss balance: for freshly initialised ADU prompts, the gradient norm of L_memorize,
   L_forget, gamma * CE_domain and -lambda * MMD^2 with respect to the trained prompt/InstaPG
   parameters, averaged over a few training batches. The class losses' gradients grow with
   CLIP's logit scale while the DDL terms' do not: this shows whether gamma and lambda swamp
   L_memorize on a given backbone (see TrainConfig.ddl_weights).
2. Entanglement: how well the frozen CLIP's own image features already tell the domains
   apart (nearest domain centroid of the few-shot training images, scored on the test
   images). ADU's premise is that they do not; DDL has the most to add when this is low.
"""
from typing import Dict

import numpy as np
import torch

from .checkpoint import build_model
from .clip_loader import FrozenClip, class_text_embeddings
from .config import TrainConfig
from .data import resolve_domains
from .trainer import (Augment, PreparedData, build_training_model, seed_everything,
                      to_model_input, training_losses)


def loss_gradient_norms(config: TrainConfig, clip: FrozenClip, data: PreparedData,
                        batches: int = 4) -> Dict:
    """{"logit_scale", "ddl_weights", "gamma", "lambda", "batches", "terms": {name: {value, grad_norm}}}.

    The prompts start as `adu train` starts them (same seed); the batches are drawn from the
    same training images it uses."""
    config.validate()
    forget, memorize = resolve_domains(data.dataset, config.forget, config.memorize)
    seed_everything(config.seed)
    model = build_training_model(config, clip, data)
    logit_scale = float(model.logit_scale)
    gamma, lam = config.ddl_weights_for(logit_scale)

    memorized_ids = data.dataset.domain_indices(memorize)
    used = np.isin(data.labels("train")[1], memorized_ids + data.dataset.domain_indices(forget))
    images = torch.from_numpy(data.train_images[used])
    classes, domains = (torch.from_numpy(a[used]) for a in data.labels("train"))
    is_memorized = torch.from_numpy(np.isin(domains.numpy(), memorized_ids))
    params = [p for name, p in model.named_parameters()
              if p.requires_grad and not name.startswith("domain_head.")]
    augment, generator = Augment(clip.image_size), torch.Generator().manual_seed(config.seed)
    sums: Dict[str, list] = {}
    for _ in range(batches):
        index = torch.randperm(len(images), generator=generator)[:config.batch_size]
        out = model(to_model_input(augment(images[index]), clip.mean, clip.std))
        _, raw = training_losses(out, classes[index], domains[index], is_memorized[index], config,
                                 (gamma, lam))
        terms = {"L_memorize": raw["mem"], "L_forget": raw["for"],
                 "gamma * CE_domain": gamma * raw["domain_ce"], "-lambda * MMD^2": -lam * raw["mmd2"]}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))
            sums.setdefault(name, []).append((term.item(), norm.item()))
    return {"logit_scale": logit_scale, "ddl_weights": config.ddl_weights,
            "gamma": gamma, "lambda": lam, "batches": batches,
            "terms": {name: {"value": sum(v for v, _ in values) / len(values),
                             "grad_norm": sum(g for _, g in values) / len(values)}
                      for name, values in sums.items()}}


def domain_separability(config: TrainConfig, clip: FrozenClip, data: PreparedData) -> Dict:
    """Nearest-centroid domain accuracy of the frozen CLIP's image embeddings."""
    from adu_perception.runtime.images import resize_center_crop

    from .evaluate import predict
    from .model import PromptConfig

    embeddings = class_text_embeddings(clip, data.dataset.classes, config.template)
    frozen = build_model(clip, embeddings, len(data.dataset.domains), PromptConfig(tokens=0, depth=0))
    # Training images are stored with an augmentation margin: crop them as test images are.
    train_images = np.stack([resize_center_crop(image, clip.image_size) for image in data.train_images])
    train = predict(frozen, train_images, clip.mean, clip.std)["embeddings"]
    test = predict(frozen, data.test_images, clip.mean, clip.std)["embeddings"]
    train_domains, test_domains = data.labels("train")[1], data.labels("test")[1]
    centroids = np.stack([train[train_domains == d].mean(0) for d in range(len(data.dataset.domains))])
    correct = (test @ centroids.T).argmax(1) == test_domains
    return {"domains": data.dataset.domains, "accuracy": float(correct.mean()),
            "chance": 1.0 / len(data.dataset.domains),
            "per_domain": {name: float(correct[test_domains == d].mean())
                           for d, name in enumerate(data.dataset.domains)}}


def format_separability(result: Dict) -> str:
    per_domain = ", ".join(f"{d} {100 * a:.1f}%" for d, a in result["per_domain"].items())
    return (f"frozen CLIP features, nearest domain centroid: {100 * result['accuracy']:.1f}% "
            f"(chance {100 * result['chance']:.1f}%; {per_domain})")


def format_balance(result: Dict) -> str:
    lines = [f"logit scale {result['logit_scale']:.2f}; DDL weights {result['ddl_weights']}: "
             f"gamma {result['gamma']:.3g}, lambda {result['lambda']:.3g} "
             f"(mean over {result['batches']} batches, fresh prompts)",
             f"{'term':20s} {'value':>9s} {'grad norm':>10s} {'/ L_memorize':>13s}"]
    reference = result["terms"]["L_memorize"]["grad_norm"] or float("nan")
    for name, term in result["terms"].items():
        lines.append(f"{name:20s} {term['value']:9.3f} {term['grad_norm']:10.4f} "
                     f"{term['grad_norm'] / reference:12.2f}x")
    return "\n".join(lines)
