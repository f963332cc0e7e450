"""Rendered illustrations as extra forgotten-domain data (`adu train --rendered`).

Copies of memorised-domain images are re-drawn by the illustration families of
`stylize.py` and added as forgotten domains, so the domain head and the prompts learn
"drawn or printed", not just the dataset's own illustration domains:
- "pooled": one domain `rendered`, each copy drawn by one family in turn;
- "per-family": one domain `rendered_<family>` per family.
Per class, a domain gets as many copies as a real domain has images of that class in the
split (the few-shot budget), so rendered domains weigh like real ones.
"""
from typing import List, Sequence, Tuple

import numpy as np

from .config import RENDERED_MODES

POOLED_DOMAIN = "rendered"
CALIBRATION_SEED_OFFSET = 7919  # held-out copies are drawn with other random parameters


def rendered_domain_names(mode: str, families: Sequence[str]) -> List[str]:
    if mode not in RENDERED_MODES:
        raise ValueError(f"unknown rendered mode {mode!r}; choose from {', '.join(RENDERED_MODES)}")
    if mode == "off":
        return []
    return [POOLED_DOMAIN] if mode == "pooled" else [f"{POOLED_DOMAIN}_{f}" for f in families]


def resolve_families(families: Sequence[str]) -> List[str]:
    """The chosen families, in FAMILIES order (empty: all of them)."""
    from .stylize import FAMILIES

    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown illustration family(ies) {', '.join(unknown)}; choose from "
                         f"{', '.join(FAMILIES)}")
    return [f for f in FAMILIES if not families or f in families]


def render_copies(images: np.ndarray, classes: np.ndarray, domains: np.ndarray,
                  source_ids: Sequence[int], mode: str, families: Sequence[str],
                  first_domain_id: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Rendered copies of the images whose domain is in source_ids.

    Returns (images, classes, domain ids, names "<family>:<source index>"); the new domains
    are numbered from first_domain_id in rendered_domain_names order. Deterministic for a seed.
    """
    from .stylize import render

    names = rendered_domain_names(mode, families)
    out_images, out_classes, out_domains, out_names = [], [], [], []
    is_source = np.isin(domains, list(source_ids))
    for class_id in np.unique(classes[is_source]):
        sources = np.flatnonzero(is_source & (classes == class_id))
        # as many copies as one real domain holds of this class (the few-shot budget)
        per_domain = int(np.max(np.bincount(domains[classes == class_id])))
        for d, _ in enumerate(names):
            for k in range(per_domain):
                source = int(sources[k % len(sources)])
                family_index = (k if mode == "pooled" else d) % len(families)
                family = families[family_index]
                rng_seed = [seed, int(class_id), d, k]
                out_images.append(render(images[source], family, rng_seed))
                out_classes.append(int(class_id))
                out_domains.append(first_domain_id + d)
                out_names.append(f"{family}:{source}")
    if not out_images:
        empty = np.zeros((0,) + images.shape[1:], np.uint8)
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64), []
    return (np.stack(out_images), np.array(out_classes, np.int64),
            np.array(out_domains, np.int64), out_names)


def with_rendered_copies(payload: dict, images: np.ndarray, classes: np.ndarray,
                         domains: np.ndarray):
    """A held-out split of a run plus rendered copies of its memorised-domain images, by the
    families the run was trained with (none when it used no rendered data), so thresholds
    are chosen on the illustrations the run knows."""
    config = payload["config"]
    mode = config.get("rendered", "off")
    if mode == "off":
        return images, classes, domains
    names = payload["domain_names"]
    copies = render_copies(images, classes, domains,
                           [names.index(d) for d in payload["memorized_domains"]], mode,
                           resolve_families(config.get("rendered_families", [])),
                           names.index(payload["rendered_domains"][0]), config["seed"] + CALIBRATION_SEED_OFFSET)
    return (np.concatenate([images, copies[0]]), np.concatenate([classes, copies[1]]),
            np.concatenate([domains, copies[2]]))


def with_rendered_copies_at_two_sizes(payload: dict, images: np.ndarray, zoomed: np.ndarray,
                                      classes: np.ndarray, domains: np.ndarray):
    """with_rendered_copies for a split read at the model's size (`images`) and at the texture
    head's larger size (`zoomed`, the same items): the copies are drawn at the larger size and
    shrunk for the model, as a camera crop of them would be. Returns (images, zoomed,
    classes, domains)."""
    from adu_perception.runtime.images import preprocess

    zoomed, classes, domains = with_rendered_copies(payload, zoomed, classes, domains)
    copies = zoomed[len(images):]
    if len(copies):
        images = np.concatenate([images, preprocess(list(copies), images.shape[1])])
    return images, zoomed, classes, domains
