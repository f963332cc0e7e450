"""Camera artefacts for fitting the texture head: JPEG compression, sensor noise, blur and
sharpening, each at a strength drawn from a range (numpy + OpenCV, seeded).

A real camera's pipeline leaves its own fine texture on a photo. A texture head fitted on one
set of photos would call another camera's artefacts "not a photo": measured on the proxy with
an unsharp mask (sigma 2, amount 1.5) on real PACS test photos, a head fitted without these
copies suppressed 18.5 % of them, one fitted with them 3.6 % (docs/benchmark_styles.md,
docs/probes/texture_scale.py).
The head is fitted on the originals plus a copy of every photo and every illustration with
each artefact, so the artefacts say nothing about the class.
"""
from typing import Sequence

import cv2
import numpy as np

ARTEFACTS = ("jpeg", "noise", "blur", "sharpen")


def apply_artefact(image: np.ndarray, artefact: str, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB image with `artefact` at a random strength:
    jpeg quality 30-90, Gaussian noise sigma 2-10 (of 255), Gaussian blur sigma 0.5-1.5 px,
    unsharp mask sigma 1-3 px with amount 0.5-2."""
    if artefact == "jpeg":
        _, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    if artefact == "noise":
        noisy = image + rng.normal(0.0, rng.uniform(2, 10), image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if artefact == "blur":
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    if artefact == "sharpen":
        amount = rng.uniform(0.5, 2.0)
        blurred = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.0, 3.0))
        return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)
    raise ValueError(f"unknown camera artefact {artefact!r} (known: {', '.join(ARTEFACTS)})")


def camera_copies(images: np.ndarray, seed: int, artefacts: Sequence[str] = ARTEFACTS) -> np.ndarray:
    """Every image (uint8 [N, H, W, 3]) once with each of `artefacts` at a random strength:
    [len(artefacts) * N, H, W, 3], artefact by artefact (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    copies = [apply_artefact(image, artefact, rng) for artefact in artefacts for image in images]
    return np.stack(copies) if copies else images[:0].copy()
