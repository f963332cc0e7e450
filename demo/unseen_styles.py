"""Silence on illustration styles the demo never trains on.

The demo forgets cartoon, sketch and billboard; the promise is about styles no training set
holds. Fresh world photos (a random stream neither pretraining nor unlearning draws from)
are re-drawn by each `adu stylize` family, none of which is a demo domain, and classified
by the bundle with its own decision rule, as the node would classify them.
"""
from typing import Dict

import numpy as np

FRESH_STREAM = 1000  # world.image_rng seed offset: pretraining uses seed, unlearning seed + 1
DRAW_SIZE = 128      # photos are drawn, then re-drawn, at this size; the bundle resizes them


def score_unseen_styles(bundle, seed: int, per_class: int = 20) -> Dict:
    """% of each family's re-drawn photos suppressed, and % of the correctly classified
    original photos still reported (what the suppression costs)."""
    from adu_perception.runtime.predictor import Predictor
    from adu_perception.training.stylize import FAMILIES, render_batch

    from . import world

    predictor = Predictor(bundle, backend="onnxruntime-cpu")
    photos, classes = [], []
    for cls in world.CLASSES:
        for i in range(per_class):
            rng = world.image_rng(seed + FRESH_STREAM, world.MEMORIZED_DOMAIN, cls, i)
            photos.append(world.render_object(cls, world.MEMORIZED_DOMAIN, rng, DRAW_SIZE))
            classes.append(cls)
    photos = np.stack(photos)
    real = predictor.classify_crops(list(photos))
    correct = [d.top_k[0]["label"] == cls for d, cls in zip(real, classes)]
    reported = [not d.suppressed for d, ok in zip(real, correct) if ok]
    suppressed = {}
    for family in FAMILIES:
        drawn = predictor.classify_crops(list(render_batch(photos, family, seed)))
        suppressed[family] = round(float(np.mean([d.suppressed for d in drawn])), 4)
    return {"images_per_family": len(photos), "suppressed": suppressed,
            "mean_suppressed": round(float(np.mean(list(suppressed.values()))), 4),
            "real_correct": int(sum(correct)),
            "real_correct_reported": round(float(np.mean(reported)), 4) if reported else 0.0}
