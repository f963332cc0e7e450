"""Tiny on-the-fly fixtures for fast tests: a random open_clip ViT config and a small
multi-domain image folder. No shared data, no download."""
import json
from pathlib import Path

import cv2
import numpy as np

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def write_tiny_clip_config(folder: Path, name: str = "tiny-test-vit") -> Path:
    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    return path


def write_tiny_dataset(root: Path, domains=("photo", "cartoon", "sketch"),
                       classes=("car", "bus", "sign"), per_group: int = 6, seed: int = 0) -> Path:
    """<root>/<domain>/<class>/<i>.png: one shape per class, one colour scheme per domain."""
    rng = np.random.default_rng(seed)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = Path(root) / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_group):
                image = np.full((40, 48, 3), 255 * (d == 2), np.uint8)
                image[:] += rng.integers(0, 40, (1, 1, 3), dtype=np.uint8)
                colour = tuple(int(v) for v in rng.integers(50, 255, 3))
                centre = (int(rng.integers(16, 32)), int(rng.integers(14, 26)))
                if c == 0:
                    cv2.circle(image, centre, 10, colour, -1 if d != 2 else 2)
                elif c == 1:
                    cv2.rectangle(image, (centre[0] - 10, centre[1] - 6), (centre[0] + 10, centre[1] + 6),
                                  colour, -1 if d != 2 else 2)
                else:
                    points = np.array([[centre[0], centre[1] - 10], [centre[0] - 10, centre[1] + 8],
                                       [centre[0] + 10, centre[1] + 8]], np.int32)
                    cv2.polylines(image, [points], True, colour, 2) if d == 2 else \
                        cv2.fillPoly(image, [points], colour)
                cv2.imwrite(str(folder / f"{i}.png"), image)
    return Path(root)
