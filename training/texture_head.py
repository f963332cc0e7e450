"""Fitting a bundle's texture head (adu_perception.runtime.texture) on a run's training images.

Photos: the run's memorised-domain training images. Illustrations: its forgotten-domain
training images plus each memorised photo re-drawn by every family the run was trained with
(`--rendered`; none when it used no rendered data), so a family the run never saw is never
in the fit either. Both read at zoom x the model's input size, and by default each image is
also added once with each camera artefact (training.camera_artefacts: JPEG, noise, blur,
sharpening, at random strengths), so that a camera's own fine texture is not taken for an
illustration's. Every tile is one row of a class-balanced, L2-regularised logistic
regression on the standardised stem statistics.
"""
import logging
from typing import Optional, Sequence

import numpy as np
import torch

from adu_perception.runtime.texture import TextureHead, stem_statistics, tiles

log = logging.getLogger(__name__)

L2 = 1e-2
TEXTURE_SEED_OFFSET = 4099  # renders for the fit use other random parameters than training's
ARTEFACT_SEED_OFFSET = 8191  # and the camera artefacts others again


def native_resolution_problem(shorter_sides: Sequence[int], input_size: int) -> Optional[str]:
    """Why a head reading `input_size` px crops cannot be fitted on images of these native
    sizes (None when it can): on images enlarged to reach that size it would learn the
    interpolation, not the texture (measured on the demo world's 64 px images read at 128 px:
    21 of 145 real road users in its seed-0 drive suppressed for their texture, docs/benchmark_styles.md)."""
    median = float(np.median(shorter_sides)) if len(shorter_sides) else 0.0
    if median >= input_size:
        return None
    return (f"the texture head reads crops at {input_size} px, but the run's training images are "
            f"{median:.0f} px (median shorter side): it would learn the enlargement, not the "
            f"texture; use a smaller --texture-zoom or larger images")


def stem_weight(model: torch.nn.Module) -> np.ndarray:
    """The frozen patch-embedding convolution of an AduModel or open_clip CLIP: float32 [C, 3, P, P]."""
    visual = model.encoder.visual if hasattr(model, "encoder") else model.visual
    conv = visual.conv1
    if conv.bias is not None or conv.stride != conv.kernel_size:
        raise ValueError("the texture head needs a patchify stem (stride = kernel, no bias)")
    return conv.weight.detach().float().cpu().numpy()


def illustrations_for_fit(photos: np.ndarray, forgotten: np.ndarray, families: Sequence[str],
                          seed: int) -> np.ndarray:
    """The fit's illustrated images: the forgotten-domain ones, then every photo re-drawn by
    each of `families` (deterministic for a seed)."""
    from .stylize import render_batch

    drawn = [render_batch(photos, family, seed + TEXTURE_SEED_OFFSET + 100 * i)
             for i, family in enumerate(families)]
    parts = [forgotten, *drawn]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("the texture head needs illustrated training images: the run has no "
                         "forgotten-domain training images and no rendered families")
    return np.concatenate(parts)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2):
    """Class-balanced L2 logistic regression (LBFGS, float64): (coef [F], intercept)."""
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    weights = torch.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    coef = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    intercept = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([coef, intercept], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(
            x @ coef + intercept, y, reduction="none")).mean() + l2 * (coef ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return coef.detach().numpy(), float(intercept.detach())


def fit_run_head(payload: dict, weight: np.ndarray, train_images: np.ndarray,
                 train_domains: np.ndarray, zoom: int, camera_artefacts: bool = True) -> TextureHead:
    """The texture head of a finished run (its checkpoint payload) from its training images
    read at zoom x its input size (domain ids in payload["domain_names"]): the memorised
    domains' photos against the forgotten domains' images (a domain the run left out is
    neither) and the photos drawn in the families the run was trained with (none without
    --rendered); with camera_artefacts, each image also once with each camera artefact."""
    from .rendered import resolve_families

    names = payload["domain_names"]
    photos = train_images[np.isin(train_domains, [names.index(d) for d in payload["memorized_domains"]])]
    forgotten = train_images[np.isin(train_domains, [names.index(d) for d in payload["forgotten_domains"]])]
    config, size = payload["config"], int(payload["image_size"])
    families = (resolve_families(config.get("rendered_families", []))
                if config.get("rendered", "off") != "off" else [])
    fitted_on = (f"{len(photos)} memorised training photos against {len(forgotten)} forgotten-domain "
                 f"training images" + (f" and the photos drawn in {len(families)} families "
                                       f"({', '.join(families)})" if families else "")
                 + f", read at {zoom} x {size} px and cut into {zoom} x {zoom} tiles"
                 + (", each image also once with each camera artefact (JPEG, noise, blur, sharpening)"
                    if camera_artefacts else ""))
    seed = config["seed"]
    return fit_texture_head(weight, payload["mean"], payload["std"], photos,
                            illustrations_for_fit(photos, forgotten, families, seed), zoom, size, fitted_on,
                            artefact_seed=seed + ARTEFACT_SEED_OFFSET if camera_artefacts else None)


def fit_texture_head(weight: np.ndarray, pixel_mean, pixel_std, photos: np.ndarray,
                     illustrations: np.ndarray, zoom: int, tile: int, fitted_on: str = "",
                     l2: float = L2, artefact_seed: Optional[int] = None) -> TextureHead:
    """Photos and illustrations: uint8 [N, zoom * tile, zoom * tile, 3]. artefact_seed: also
    fit on a copy of each with each camera artefact (training.camera_artefacts); None: originals only."""
    if len(photos) == 0 or len(illustrations) == 0:
        raise ValueError(f"the texture head needs photos and illustrations, got {len(photos)} "
                         f"and {len(illustrations)}")
    if artefact_seed is not None:
        from .camera_artefacts import camera_copies

        photos = np.concatenate([photos, camera_copies(photos, artefact_seed)])
        illustrations = np.concatenate([illustrations, camera_copies(illustrations, artefact_seed + 1)])
    mean, std = np.asarray(pixel_mean, np.float32), np.asarray(pixel_std, np.float32)

    def features(images):
        return stem_statistics(tiles(images, tile), weight, mean, std)

    real, drawn = features(photos), features(illustrations)
    x = np.concatenate([real, drawn]).astype(np.float64)
    feature_mean, feature_std = x.mean(0), x.std(0) + 1e-6
    coef, intercept = fit_logistic((x - feature_mean) / feature_std,
                                   np.r_[np.zeros(len(real)), np.ones(len(drawn))], l2)
    head = TextureHead(zoom=zoom, tile=tile, stem_weight=weight.astype(np.float32), pixel_mean=mean,
                       pixel_std=std, feature_mean=feature_mean.astype(np.float32),
                       feature_std=feature_std.astype(np.float32), coef=coef.astype(np.float32),
                       intercept=intercept, fitted_on=fitted_on)
    log.info("texture head fitted on %d photos and %d illustrations (%d tiles each)", len(photos),
             len(illustrations), zoom * zoom)
    return head
