"""Silence on illustration styles the demo never trains on.

The demo forgets cartoon, sketch and billboard; the promise is about styles no training set
holds. Fresh world photos (a random stream neither pretraining nor unlearning draws from)
are re-drawn by each `adu stylize` family, none of which is a demo domain, and classified
by the bundle with its own decision rule, as the node would classify them.
"""
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

FRESH_STREAM = 1000  # world.image_rng seed offset: pretraining uses seed, unlearning seed + 1
MEDIA_STREAM = 2000  # and the photos re-drawn as extra pretraining media (write_pretraining_media)
DRAW_SIZE = 128      # photos are drawn, then re-drawn, at this size; the bundle resizes them


def world_photos(stream_seed: int, cls: str, count: int) -> np.ndarray:
    """uint8 [count, DRAW_SIZE, DRAW_SIZE, 3]: the first `count` world photos of `cls` in a stream."""
    from . import world

    return np.stack([world.render_object(cls, world.MEMORIZED_DOMAIN,
                                         world.image_rng(stream_seed, world.MEMORIZED_DOMAIN, cls, i), DRAW_SIZE)
                     for i in range(count)])


def score_unseen_styles(bundle, seed: int, per_class: int = 20, pretrained_on: Sequence[str] = ()) -> Dict:
    """% of each family's re-drawn photos suppressed, and % of the correctly classified
    original photos still reported (what the suppression costs). `pretrained_on`: families
    the tiny CLIP's pretraining showed (--pretrain-families), left out of the unseen mean."""
    from adu_perception.runtime.predictor import Predictor
    from adu_perception.training.stylize import FAMILIES, render_batch

    from . import world

    predictor = Predictor(bundle, backend="onnxruntime-cpu")
    photos = np.concatenate([world_photos(seed + FRESH_STREAM, cls, per_class) for cls in world.CLASSES])
    classes = [cls for cls in world.CLASSES for _ in range(per_class)]
    real = predictor.classify_crops(list(photos))
    correct = [d.top_k[0]["label"] == cls for d, cls in zip(real, classes)]
    reported = [not d.suppressed for d, ok in zip(real, correct) if ok]
    suppressed = {}
    for family in FAMILIES:
        drawn = predictor.classify_crops(list(render_batch(photos, family, seed)))
        suppressed[family] = round(float(np.mean([d.suppressed for d in drawn])), 4)
    unseen = [f for f in FAMILIES if f not in pretrained_on]
    return {"images_per_family": len(photos), "suppressed": suppressed, "pretrained_on": list(pretrained_on),
            "mean_suppressed": round(float(np.mean([suppressed[f] for f in unseen])), 4) if unseen else None,
            "real_correct": int(sum(correct)),
            "real_correct_reported": round(float(np.mean(reported)), 4) if reported else 0.0}


def write_pretraining_media(root, families, per_class: int, seed: int, size: int = 64) -> None:
    """`<root>/<family>/<class>/<i>.png`: world photos of their own stream, re-drawn by each
    family at DRAW_SIZE (as score_unseen_styles draws them) and shrunk to `size`, as extra
    media for the tiny CLIP's pretraining (`adu demo --pretrain-families`). A family written
    here is no longer unseen by the CLIP: the report's unseen mean then leaves it out."""
    import cv2

    from adu_perception.training.stylize import render_batch

    from . import world

    for family in families:
        for cls in world.CLASSES:
            photos = world_photos(seed + MEDIA_STREAM, cls, per_class)
            folder = Path(root) / family / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(render_batch(photos, family, seed + MEDIA_STREAM + world.CLASSES.index(cls))):
                small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
                cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
