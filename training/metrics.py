"""Mem, For and H as defined in ADU (all in %)."""
from typing import Dict, Iterable, Sequence

import numpy as np


def harmonic_mean(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def per_domain_accuracy(predictions: np.ndarray, labels: np.ndarray, domains: np.ndarray,
                        domain_names: Sequence[str]) -> Dict[str, float]:
    """Class accuracy (%) per domain; domains without test images are left out."""
    result = {}
    for index, name in enumerate(domain_names):
        mask = domains == index
        if mask.any():
            result[name] = float(100.0 * (predictions[mask] == labels[mask]).mean())
    return result


def mem_for_h(predictions: np.ndarray, labels: np.ndarray, domains: np.ndarray,
              memorized: Iterable[int], forgotten: Iterable[int]) -> Dict[str, float]:
    """Mem = accuracy on memorized-domain test images (pooled); For = 100 - accuracy on
    forgotten-domain test images (pooled); H = their harmonic mean."""
    correct = predictions == labels
    mem_mask = np.isin(domains, list(memorized))
    for_mask = np.isin(domains, list(forgotten))
    if not mem_mask.any() or not for_mask.any():
        raise ValueError("Mem/For need test images from both memorized and forgotten domains")
    mem = float(100.0 * correct[mem_mask].mean())
    forget = float(100.0 - 100.0 * correct[for_mask].mean())
    return {"mem": mem, "for": forget, "h": harmonic_mean(mem, forget)}


def average_combinations(combos: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Average over forget/memorize combinations; H is computed per combination first."""
    if not combos:
        raise ValueError("no combinations to average")
    return {key: float(np.mean([c[key] for c in combos])) for key in ("mem", "for", "h")}
