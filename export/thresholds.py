"""Choosing the bundle's decision thresholds on held-out images of the run.

The rule itself lives in one place, `adu_perception.runtime.decision.decide` (docs/bundle.md):
suppress if sum(domain_probs[forgotten]) >= forgotten_domain, else suppress if
max(probs) < confidence. Here we only pick the two numbers, by grid search through that
very function: keep at least `keep` (95%) of the correct memorized-domain predictions
reported and, among the pairs that do, suppress as many forgotten-domain predictions as
possible.
"""
from typing import Sequence

import numpy as np

RULE = ("suppress if sum(domain_probs[forgotten]) >= forgotten_domain, "
        "else suppress if max(probs) < confidence")
CONFIDENCE_GRID = np.round(np.arange(0.0, 1.0, 0.01), 2)           # 0.00 (off) .. 0.99
FORGOTTEN_DOMAIN_GRID = np.round(np.arange(0.05, 1.001, 0.01), 2)  # 0.05 .. 1.00


def choose_thresholds(probs: np.ndarray, domain_probs: np.ndarray, classes: np.ndarray,
                      domains: np.ndarray, memorized_ids: Sequence[int],
                      forgotten_ids: Sequence[int], keep: float = 0.95,
                      confidence_grid=CONFIDENCE_GRID,
                      forgotten_domain_grid=FORGOTTEN_DOMAIN_GRID) -> dict:
    """The `thresholds` section of a manifest, chosen on these outputs.

    Ties on forgotten suppression go to the pair keeping more correct memorized predictions,
    then to the lower thresholds (suppress no more than needed).
    """
    memorized, forgotten, correct = _groups(probs, classes, domains, memorized_ids, forgotten_ids)
    if not correct.any() or not forgotten.any():
        raise ValueError(f"cannot choose thresholds: {int(correct.sum())} correct "
                         f"memorized-domain and {int(forgotten.sum())} forgotten-domain "
                         f"predictions in the held-out images")
    best = None
    for forgotten_domain in forgotten_domain_grid:
        for confidence in confidence_grid:
            suppressed = _suppressed(probs, domain_probs, forgotten_ids, confidence, forgotten_domain)
            kept = 1.0 - suppressed[correct].mean()
            if kept < keep:
                break  # a higher confidence threshold only suppresses more
            # Negated thresholds: on ties the lower ones win.
            score = (suppressed[forgotten].mean(), kept, -forgotten_domain, -confidence)
            if best is None or score > best[0]:
                best = (score, float(confidence), float(forgotten_domain))
    if best is None:
        raise ValueError(f"no thresholds keep {keep:.0%} of the correct memorized predictions")
    result = score_thresholds(probs, domain_probs, classes, domains, memorized_ids, forgotten_ids,
                              best[1], best[2])
    result["target_memorized_correct_kept"] = keep
    return result


def score_thresholds(probs, domain_probs, classes, domains, memorized_ids, forgotten_ids,
                     confidence: float, forgotten_domain: float) -> dict:
    """Rates and counts of one threshold pair (the manifest's `thresholds` section)."""
    memorized, forgotten, correct = _groups(probs, classes, domains, memorized_ids, forgotten_ids)
    suppressed = _suppressed(probs, domain_probs, forgotten_ids, confidence, forgotten_domain)
    n_correct, n_forgotten = int(correct.sum()), int(forgotten.sum())
    n_kept = int((correct & ~suppressed).sum())
    n_suppressed = int((forgotten & suppressed).sum())
    return {
        "confidence": confidence,
        "forgotten_domain": forgotten_domain,
        "rule": RULE,
        "memorized_correct_kept": n_kept / n_correct if n_correct else 1.0,
        "forgotten_suppressed": n_suppressed / n_forgotten if n_forgotten else 0.0,
        "n_memorized": int(memorized.sum()), "n_forgotten": n_forgotten,
        "n_memorized_correct": n_correct, "n_memorized_correct_kept": n_kept,
        "n_forgotten_suppressed": n_suppressed,
    }


def _groups(probs, classes, domains, memorized_ids, forgotten_ids):
    memorized = np.isin(domains, memorized_ids)
    forgotten = np.isin(domains, forgotten_ids)
    return memorized, forgotten, memorized & (np.asarray(probs).argmax(1) == classes)


def _suppressed(probs, domain_probs, forgotten_ids, confidence, forgotten_domain) -> np.ndarray:
    from adu_perception.runtime.decision import decide

    mask = np.zeros(np.shape(domain_probs)[1], bool)
    mask[list(forgotten_ids)] = True
    return ~decide(probs, domain_probs, mask, confidence, forgotten_domain).reported
