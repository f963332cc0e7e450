"""`adu benchmark loss-balance`: how hard each loss term pulls on the prompts.

For freshly initialised ADU prompts, the gradient norm of L_memorize, L_forget,
gamma * CE_domain and -lambda * MMD^2 with respect to the trained prompt/InstaPG parameters,
averaged over a few training batches. The class losses' gradients grow with CLIP's logit
scale while the DDL terms' do not: this shows whether gamma and lambda swamp L_memorize on
a given backbone (see TrainConfig.ddl_weights).
"""
from typing import Dict

import torch

from . import losses
from .checkpoint import build_model
from .clip_loader import ClipSpec, class_text_embeddings, load_clip
from .config import TrainConfig
from .data import resolve_domains
from .trainer import Augment, prepare_data, prompt_config, seed_everything, to_model_input


def loss_gradient_norms(config: TrainConfig, batches: int = 4) -> Dict:
    """{"logit_scale", "weights": {ddl_weights: (gamma, lambda)}, "terms": {name: {value, grad_norm}}}."""
    config.validate()
    seed_everything(config.seed)
    clip = load_clip(ClipSpec.from_args(config.clip, config.pretrained, config.model_config))
    data = prepare_data(config, clip.image_size)
    forget, memorize = resolve_domains(data.dataset, config.forget, config.memorize)
    embeddings = class_text_embeddings(clip, data.dataset.classes, config.template)
    prompts = prompt_config(config, len(clip.model.visual.transformer.resblocks))
    model = build_model(clip, embeddings, len(data.dataset.domains), prompts)
    logit_scale = float(model.logit_scale)
    gamma, lam = config.ddl_weights_for(logit_scale)

    memorized_ids = torch.tensor(data.dataset.domain_indices(memorize))
    used = torch.from_numpy(data.labels("train")[1]).clone()
    used = torch.isin(used, torch.tensor(data.dataset.domain_indices(memorize + forget)))
    images = torch.from_numpy(data.train_images)[used]
    classes, domains = (torch.from_numpy(a)[used] for a in data.labels("train"))
    params = [p for name, p in model.named_parameters()
              if p.requires_grad and not name.startswith("domain_head.")]
    augment, generator = Augment(clip.image_size), torch.Generator().manual_seed(config.seed)
    sums: Dict[str, list] = {}
    for _ in range(batches):
        index = torch.randperm(len(images), generator=generator)[:config.batch_size]
        out = model(to_model_input(augment(images[index]), clip.mean, clip.std))
        memorized = torch.isin(domains[index], memorized_ids)
        _, ce, mmd2 = losses.domain_disentangling_loss(out["domain_logits"], out["embeddings"],
                                                       domains[index], gamma, lam)
        terms = {"L_memorize": losses.memorize_loss(out["logits"][memorized], classes[index][memorized]),
                 "L_forget": losses.forget_loss(out["logits"][~memorized]),
                 "gamma * CE_domain": gamma * ce, "-lambda * MMD^2": -lam * mmd2}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))
            sums.setdefault(name, []).append((term.item(), norm.item()))
    return {"logit_scale": logit_scale, "ddl_weights": config.ddl_weights,
            "gamma": gamma, "lambda": lam, "batches": batches,
            "terms": {name: {"value": sum(v for v, _ in values) / len(values),
                             "grad_norm": sum(g for _, g in values) / len(values)}
                      for name, values in sums.items()}}


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
