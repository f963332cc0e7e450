"""A tiny open_clip model pretrained in minutes on the procedural world.

It stands in for a web-pretrained CLIP, which cannot be downloaded here. Like one, it is
trained on images of all four domains with captions that mostly name only the class ("a
picture of a car."), so it recognises the classes in every domain (its domains are
entangled): the starting point ADU needs. Like web captions, some also name the medium ("a
pencil sketch of a car.", `medium_captions`): without them a linear probe on its image
embeddings recognised 61-72 % of the photos and billboards as such, where a real CLIP knows a
poster from a photo; with half the steps naming the medium, 95-99 % (a one-off probe: seed 0,
8 and 20 shots per class and domain, the world before its roadside crops).

It is an ordinary open_clip model: its JSON config and a plain state_dict load through
`open_clip.create_model_and_transforms(name, pretrained=path)`.
"""
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

CONFIG_PATH = Path(__file__).with_name("tiny-clip-64.json")
MODEL_NAME = CONFIG_PATH.stem  # open_clip names a config file's model after the file
# Captions that name only the class: none of them says cartoon, sketch or billboard.
CAPTION_TEMPLATES = ("a picture of a {}.", "a photo of a {}.", "an image of a {}.", "a {}.",
                     "there is a {} here.", "a view of a {}.")
ZERO_SHOT_TEMPLATE = "a photo of a {}."
# Captions that name the medium as well, as much of a web-scale caption set does ("a pencil
# sketch of a car"): a real CLIP learns from them that a billboard poster is not a photo.
MEDIUM_TEMPLATES = {"photo": "a real photograph of a {}.", "cartoon": "a cartoon drawing of a {}.",
                    "sketch": "a pencil sketch of a {}.", "billboard": "a billboard poster showing a {}.",
                    # `adu stylize` families, for `--pretrain-families` (more media in pretraining)
                    "halftone_print": "a halftone print of a {}.", "flat_vector": "a flat vector graphic of a {}.",
                    "line_ink": "an ink line drawing of a {}.", "painterly": "a painting of a {}.",
                    "comic": "a comic book panel of a {}.", "pictogram": "a pictogram of a {}.",
                    "screen": "a photo of a screen showing a {}.",
                    "billboard_print": "a printed photo of a {} on a billboard."}


def register_config(config_path=CONFIG_PATH) -> str:
    """Make open_clip know the model in `config_path`; returns its model name."""
    import open_clip

    open_clip.add_model_config(str(config_path))
    return Path(config_path).stem


def load_image_folder(root, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, list, list]:
    """`<root>/<domain>/<class>/*` -> (uint8 [N, size, size, 3] RGB, class ids, domain ids, classes, domains),
    read by the training stage's own loader."""
    from adu_perception.training.data import MultiDomainDataset, load_images

    dataset = MultiDomainDataset.scan(root)
    images, kept, _ = load_images(dataset.root, dataset.samples, size)
    return (images, np.array([s.class_index for s in kept]), np.array([s.domain_index for s in kept]),
            dataset.classes, dataset.domains)


def _augment(x, generator):
    """Light augmentation in one batched op: random zoom (80-100 %), shift and horizontal flip."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    scale = 0.8 + 0.2 * torch.rand(n, generator=generator)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale).unsqueeze(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _caption_tokens(tokenizer, classes: Sequence[str], templates: Sequence[str]):
    """Token ids [templates x classes, context]."""
    names = [c.replace("_", " ") for c in classes]
    return tokenizer([t.format(n) for t in templates for n in names])


def _medium_caption_tokens(tokenizer, classes: Sequence[str], domains: Sequence[str]):
    """Token ids [domains x classes, context] of the captions that name the medium."""
    unknown = sorted(set(domains) - set(MEDIUM_TEMPLATES))
    if unknown:
        raise ValueError(f"no medium caption for domain(s) {', '.join(unknown)}; known: "
                         f"{', '.join(MEDIUM_TEMPLATES)} (or pass medium_captions=0)")
    names = [c.replace("_", " ") for c in classes]
    return tokenizer([MEDIUM_TEMPLATES[d].format(n) for d in domains for n in names])


def pretrain_tiny_clip(data_root, out_dir, epochs: int = 15, seed: int = 0, batch_size: int = 32,
                       lr: float = 1e-3, weight_decay: float = 0.05, warmup_fraction: float = 0.05,
                       temperature: Tuple[float, float] = (0.01, 0.07), patch_dropout: float = 0.5,
                       unmasked_fraction: float = 0.0, medium_captions: float = 0.0,
                       config_path=CONFIG_PATH, progress: bool = True) -> Tuple[Path, Path]:
    """CLIP-style pretraining from scratch on `<data_root>/<domain>/<class>/*`.

    Loss: image-to-text cross-entropy over the class captions (each image against the
    captions of every class, in a caption template drawn per step). With `medium_captions`
    > 0, that share of the steps uses MEDIUM_TEMPLATES instead: each image against the
    captions of every (domain, class) pair. AdamW with linear warm-up then cosine decay;
    light augmentation (zoom, shift, flip) and patch dropout, off for the last
    `unmasked_fraction` of the steps (FLIP's unmasked tuning: the model is used with every
    patch; opt-in, measured in docs/demo_experiments.md).
    The demo's sizes (7,200 64-px images, 20 epochs) took 335-390 s on 2 idle CPU cores.

    Writes `<out_dir>/<name>.json` (a copy of the config) and `<out_dir>/<name>.pt` (the
    state_dict) and returns their paths.
    """
    import open_clip
    import torch
    import torch.nn.functional as F
    from open_clip.transformer import PatchDropout
    from tqdm import tqdm

    from adu_perception.training.trainer import to_model_input

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    name = register_config(config_path)
    model, _, _ = open_clip.create_model_and_transforms(name)
    # FLIP-style patch dropout: half the patch tokens per image, so a step costs about half;
    # at this budget more, cheaper steps learn more. Training only (a no-op in eval mode).
    model.visual.patch_dropout = PatchDropout(patch_dropout) if patch_dropout else torch.nn.Identity()
    # A temperature schedule replaces the learned one. The class captions differ by one
    # word, so a fresh text tower embeds them almost alike (cosine ~0.95) and at CLIP's
    # usual 0.07 the loss idles near log(#classes) for epochs. A sharp start (0.01)
    # amplifies the small differences and breaks the symmetry; easing back to 0.07 then
    # pushes the classes apart (a sharp end is content with text embeddings at cosine 0.99).
    model.logit_scale.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(name)
    size = _image_size(model)
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD

    images, labels, domain_ids, classes, domains = load_image_folder(data_root, size)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    tokens = _caption_tokens(tokenizer, classes, CAPTION_TEMPLATES).view(len(CAPTION_TEMPLATES), len(classes), -1)
    # With medium captions, a step's targets are (domain, class) pairs: caption d * C + c.
    medium_tokens = _medium_caption_tokens(tokenizer, classes, domains) if medium_captions > 0 else None
    pair_labels = torch.from_numpy(domain_ids) * len(classes) + labels
    log.info("pretraining %s on %d images (%s; %s)", name, len(images), ", ".join(classes), ", ".join(domains))

    # The usual CLIP recipe: no weight decay on gains, biases and embeddings.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters()
                if p.requires_grad and not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)  # fused: 5x faster on CPU
    total = epochs * math.ceil(len(images) / batch_size)
    warmup = max(1, int(warmup_fraction * total))
    # FLIP's unmasked tuning: the last steps see every patch, as the model is used
    unmasked_from = int((1 - unmasked_fraction) * total)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))

    model.train()
    start, step = time.time(), 0
    bar = tqdm(total=total, desc=f"pretrain {name}", disable=not progress, unit="step")
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        correct = 0
        for i in range(0, len(order), batch_size):
            index = order[i:i + batch_size]
            if step == unmasked_from:
                model.visual.patch_dropout = torch.nn.Identity()
            x = _augment(to_model_input(images[index], mean, std), generator)
            y = labels[index]
            named = medium_tokens is not None and torch.rand((), generator=generator) < medium_captions
            if named:
                captions, target = medium_tokens, pair_labels[index]
            else:
                captions = tokens[torch.randint(len(CAPTION_TEMPLATES), (), generator=generator)]
                target = y
            done = step / max(1, total - 1)  # geometric interpolation between the temperatures
            model.logit_scale.fill_(-(1 - done) * math.log(temperature[0]) - done * math.log(temperature[1]))

            image_features = F.normalize(model.encode_image(x), dim=-1)
            text_features = F.normalize(model.encode_text(captions), dim=-1)
            logits = model.logit_scale.exp() * image_features @ text_features.T
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()

            step += 1
            correct += (logits.argmax(-1) % len(classes) == y).sum().item()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", acc=f"{correct / (i + len(index)):.3f}")
    bar.close()
    log.info("pretrained %s in %.0f s (last epoch train accuracy %.3f)", name, time.time() - start,
             correct / len(images))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_copy, checkpoint = out_dir / f"{name}.json", out_dir / f"{name}.pt"
    if Path(config_path).resolve() != config_copy.resolve():
        shutil.copyfile(config_path, config_copy)
    torch.save(model.state_dict(), checkpoint)  # a plain state_dict: open_clip's own loader reads it
    return config_copy, checkpoint


def _image_size(model) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def zero_shot_accuracy(model_name: str, checkpoint, data_root, config_path: Optional[str] = None,
                       template: str = ZERO_SHOT_TEMPLATE, batch_size: int = 256) -> Dict[str, float]:
    """Zero-shot class accuracy per domain, loading the model the ordinary open_clip way."""
    import torch
    from PIL import Image

    model, preprocess, tokenizer = _load(model_name, checkpoint, config_path)
    images, labels, domain_ids, classes, domains = load_image_folder(data_root, _image_size(model))
    with torch.no_grad():
        text = _class_text_features(model, tokenizer, classes, template)
        predictions = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([preprocess(Image.fromarray(image)) for image in images[i:i + batch_size]])
            predictions.append((model.encode_image(x) @ text.T).argmax(-1).numpy())
    correct = np.concatenate(predictions) == labels
    return {domain: float(correct[domain_ids == d].mean()) for d, domain in enumerate(domains)}


def drive_zero_shot_accuracy(model_name: str, checkpoint, seed: int, frames: int,
                             config_path: Optional[str] = None, template: str = ZERO_SHOT_TEMPLATE) -> Dict:
    """Zero-shot class accuracy on the real road users of a generated drive, cropped as the
    node crops them: {"accuracy": a, "per_class": {class: [right, seen]}}."""
    import torch

    from adu_perception.runtime.images import crop_regions, preprocess
    from adu_perception.training.trainer import to_model_input

    from . import world

    model, transform, tokenizer = _load(model_name, checkpoint, config_path)
    classes = list(world.CLASSES)
    mean, std = transform.transforms[-1].mean, transform.transforms[-1].std  # its Normalize
    counts = {c: [0, 0] for c in classes}
    with torch.no_grad():
        text = _class_text_features(model, tokenizer, classes, template)
        for rgb, objects in world.render_drive(frames, seed):
            real = [o for o in objects if o["domain"] == world.MEMORIZED_DOMAIN]
            if not real:
                continue
            crops = crop_regions(rgb, [tuple(o["box"]) for o in real], 0.0)
            x = to_model_input(torch.from_numpy(preprocess([c for _, c in crops], _image_size(model))), mean, std)
            for o, predicted in zip(real, (model.encode_image(x) @ text.T).argmax(-1).tolist()):
                counts[o["class"]][0] += classes[predicted] == o["class"]
                counts[o["class"]][1] += 1
    right, seen = (sum(v[i] for v in counts.values()) for i in (0, 1))
    return {"accuracy": right / max(1, seen), "per_class": counts}


def closest_class_captions(model_name: str, checkpoint, classes: Sequence[str], config_path: Optional[str] = None,
                           template: str = ZERO_SHOT_TEMPLATE) -> Dict:
    """The two classes whose captions the text tower embeds most alike:
    {"classes": [a, b], "cosine": c}. Near 1, no prompt learned on top of this frozen text
    tower can tell the two apart by name (the demo's tiny CLIP: truck and bus)."""
    import torch

    model, _, tokenizer = _load(model_name, checkpoint, config_path)
    with torch.no_grad():
        text = _class_text_features(model, tokenizer, classes, template)
    cosine = (text @ text.T).fill_diagonal_(-2.0)
    a, b = divmod(int(cosine.argmax()), len(classes))
    return {"classes": [classes[a], classes[b]], "cosine": round(float(cosine[a, b]), 4)}


def _class_text_features(model, tokenizer, classes: Sequence[str], template: str):
    """[classes, E]: unit-length text embeddings of one caption per class."""
    import torch

    return torch.nn.functional.normalize(model.encode_text(_caption_tokens(tokenizer, classes, [template])), dim=-1)


def _load(model_name: str, checkpoint, config_path: Optional[str] = None):
    """(model in eval mode, its image preprocess, its tokenizer), the ordinary open_clip way."""
    import open_clip

    if config_path is not None or model_name == MODEL_NAME:
        register_config(config_path or CONFIG_PATH)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint))
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)
