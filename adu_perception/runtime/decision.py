"""The decision rule of docs/bundle.md, in one place for the export stage (choosing
thresholds), the ROS node and `adu replay`:

0. if any of the item's outputs (probs, domain_probs, or real_similarity while rule 2 is on)
   is NaN or inf -> suppressed, reason "invalid_output" (every comparison below is false for
   NaN, so such an item would otherwise be reported; an fp16 overflow, a damaged engine);
1. p_forgotten = sum(domain_probs[forgotten]); if p_forgotten >= forgotten_domain
   -> suppressed, reason "forgotten_domain" (domain = the most likely forgotten domain);
   else if p_texture >= forgotten_domain (the bundle has a texture head) -> suppressed,
   reason "illustrated_texture": the crop's fine texture is not a photo's (runtime.texture);
   one threshold for both scores, so together they are one rule with one share of the
   real items it may cost;
2. else if real_similarity < min_real_similarity (both given: the bundle has an open-set
   bank) -> suppressed, reason "unfamiliar": the item looks like no memorised-domain image,
   e.g. an illustration style the domain classifier never saw;
3. else if max(probs) < confidence -> suppressed, reason "low_confidence";
4. else reported: label = argmax class, score = max(probs).
"""
from dataclasses import asdict, dataclass
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

# Reason codes (index into REASONS), so arrays of decisions stay numeric. New codes are
# appended: the values of the old ones never change.
REPORTED, FORGOTTEN_DOMAIN, LOW_CONFIDENCE, UNFAMILIAR, ILLUSTRATED_TEXTURE, INVALID_OUTPUT = range(6)
REASONS = ("reported", "forgotten_domain", "low_confidence", "unfamiliar", "illustrated_texture",
           "invalid_output")


def is_threshold(value, low: float = 0.0) -> bool:
    """Can `value` be a threshold of the rule: a real number (not a bool) in [low, 1]? NaN is not."""
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.floating))
            and low <= value <= 1.0)


class Decisions(NamedTuple):
    """Vectorised decisions for N items (all arrays of length N)."""
    reported: np.ndarray     # bool
    reason: np.ndarray       # int8 codes: REPORTED, FORGOTTEN_DOMAIN, ... (REASONS)
    label: np.ndarray        # int: argmax class (also filled for suppressed items)
    score: np.ndarray        # float: max(probs)
    domain: np.ndarray       # int: most likely forgotten domain if suppressed for it, else argmax
    p_forgotten: np.ndarray  # float: summed probability of the forgotten domains
    real_similarity: np.ndarray  # float: open-set score (runtime.open_set); NaN when not computed
    p_texture: np.ndarray    # float: texture score (runtime.texture); NaN when not computed


def decide(probs, domain_probs, forgotten_mask, confidence: float, forgotten_domain: float,
           real_similarity=None, min_real_similarity: Optional[float] = None,
           p_texture=None) -> Decisions:
    """Apply the rule to probs [N, C] and domain_probs [N, D]; forgotten_mask is bool [D].
    real_similarity [N] and min_real_similarity: rule 2, applied only when both are given.
    p_texture [N]: the second score of rule 1, applied when given."""
    probs = np.asarray(probs, dtype=np.float64)
    domain_probs = np.asarray(domain_probs, dtype=np.float64)
    mask = np.asarray(forgotten_mask, dtype=bool)
    if probs.ndim != 2 or domain_probs.ndim != 2 or len(probs) != len(domain_probs):
        raise ValueError(f"need probs [N, C] and domain_probs [N, D] with the same N, got "
                         f"{probs.shape} and {domain_probs.shape}")
    if mask.shape != (domain_probs.shape[1],):
        raise ValueError(f"forgotten_mask has shape {mask.shape}, expected "
                         f"({domain_probs.shape[1]},) like domain_probs' columns")
    similarity = _per_item(real_similarity, "real_similarity", len(probs))
    texture = _per_item(p_texture, "p_texture", len(probs))
    open_set = real_similarity is not None and min_real_similarity is not None
    invalid = ~(np.isfinite(probs).all(axis=1) & np.isfinite(domain_probs).all(axis=1)
                & (np.isfinite(similarity) if open_set else True))
    probs, domain_probs = _zero_rows(probs, invalid), _zero_rows(domain_probs, invalid)
    p_forgotten = domain_probs[:, mask].sum(axis=1)
    # With no forgotten domain the domain score can never fire (even at threshold 0).
    forgotten = ~invalid & (p_forgotten >= forgotten_domain) & mask.any()
    textured = ~invalid & ~forgotten & (texture >= forgotten_domain)  # NaN (no texture head) never fires
    unfamiliar = np.zeros(len(probs), bool)
    if open_set:
        unfamiliar = ~invalid & ~forgotten & ~textured & (similarity < min_real_similarity)
    score = probs.max(axis=1)
    low = ~invalid & ~forgotten & ~textured & ~unfamiliar & (score < confidence)
    reason = np.select([invalid, forgotten, textured, unfamiliar, low],
                       [INVALID_OUTPUT, FORGOTTEN_DOMAIN, ILLUSTRATED_TEXTURE, UNFAMILIAR, LOW_CONFIDENCE],
                       REPORTED).astype(np.int8)
    best_forgotten = np.where(mask, domain_probs, -np.inf).argmax(axis=1)
    domain = np.where(forgotten, best_forgotten, domain_probs.argmax(axis=1))
    return Decisions(reported=reason == REPORTED, reason=reason, label=probs.argmax(axis=1),
                     score=score, domain=domain, p_forgotten=p_forgotten,
                     real_similarity=similarity, p_texture=texture)


def _zero_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`values` with the given rows zeroed (their non-finite numbers reach no JSON, no max)."""
    return np.where(rows[:, None], 0.0, values) if rows.any() else values


def _per_item(values, name: str, n: int) -> np.ndarray:
    """An optional per-item score as float [n]; NaN everywhere when not given."""
    if values is None:
        return np.full(n, np.nan)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {values.shape}, expected ({n},) like probs' rows")
    return values


@dataclass
class Decision:
    """One item's decision, ready for JSON (label is None when suppressed; real_similarity
    is None when the bundle has no open-set bank, p_texture when it has no texture head)."""
    reported: bool
    reason: str
    label: Optional[str]
    score: float
    domain: str
    domain_score: float
    p_forgotten: float
    real_similarity: Optional[float]
    p_texture: Optional[float]
    top_k: List[dict]            # [{"label": ..., "score": ...}], best first
    region: Optional[list] = None  # [x, y, w, h] in the source frame, when regions are used

    @property
    def suppressed(self) -> bool:
        return not self.reported

    def to_dict(self) -> dict:
        return {**asdict(self), "suppressed": not self.reported}


def describe(probs, domain_probs, decisions: Decisions, class_names: Sequence[str],
             domain_names: Sequence[str], top_k: int = 3, regions=None) -> List[Decision]:
    """Per-item Decision objects (with top-k classes) from the arrays `decide` returned."""
    invalid = decisions.reason == INVALID_OUTPUT
    probs = _zero_rows(np.asarray(probs, dtype=np.float64), invalid)
    domain_probs = _zero_rows(np.asarray(domain_probs, dtype=np.float64), invalid)
    k = max(1, min(int(top_k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    items = []
    for i in range(len(probs)):
        domain = int(decisions.domain[i])
        items.append(Decision(
            reported=bool(decisions.reported[i]),
            reason=REASONS[int(decisions.reason[i])],
            label=class_names[int(decisions.label[i])] if decisions.reported[i] else None,
            score=round(float(decisions.score[i]), 6),
            domain=domain_names[domain],
            domain_score=round(float(domain_probs[i, domain]), 6),
            p_forgotten=round(float(decisions.p_forgotten[i]), 6),
            real_similarity=(None if np.isnan(decisions.real_similarity[i])
                             else round(float(decisions.real_similarity[i]), 6)),
            p_texture=(None if np.isnan(decisions.p_texture[i])
                       else round(float(decisions.p_texture[i]), 6)),
            top_k=[] if invalid[i] else [{"label": class_names[c], "score": round(float(probs[i, c]), 6)}
                                         for c in order[i]],
            region=[int(v) for v in regions[i]] if regions is not None else None))
    return items
