"""Choosing the bundle's decision thresholds on held-out images of the run.

The rule itself lives in one place, `adu_perception.runtime.decision.decide` (docs/bundle.md):
suppress if sum(domain_probs[forgotten]) >= forgotten_domain, else suppress if
real_similarity < min_real_similarity (open-set bank only), else suppress if
max(probs) < confidence. Here we only pick the numbers, by a grid search: keep at least
`keep` (95%) of the correct memorized-domain predictions reported and, among the
combinations that do, suppress as many forgotten-domain predictions as possible.

"Keep 95 %" is counted as split conformal prediction counts it (`required_kept`): thresholds
placed at the edge of a small calibration sample keep less than that on new images.
"""
import math
from typing import Optional, Sequence

import numpy as np

RULE = ("suppress if sum(domain_probs[forgotten]) >= forgotten_domain or p_texture >= "
        "forgotten_domain (texture head only), "
        "else suppress if real_similarity < min_real_similarity (kNN cosine to the memorised-"
        "domain bank; only with an open_set bank), "
        "else suppress if max(probs) < confidence")
CONFIDENCE_GRID = np.round(np.arange(0.0, 1.0, 0.01), 2)           # 0.00 (off) .. 0.99
FORGOTTEN_DOMAIN_GRID = np.round(np.arange(0.05, 1.001, 0.01), 2)  # 0.05 .. 1.00
# min_real_similarity candidates: these quantiles of the correct memorized items' scores
# (0 %: every one of them passes), and "off".
REAL_SIMILARITY_QUANTILES = np.arange(0.0, 0.101, 0.01)
REAL_SIMILARITY_OFF = -1.0  # cosine never falls below -1: the rule never fires


def real_similarity_grid(real_similarity, correct) -> np.ndarray:
    """Candidate min_real_similarity values: "off" plus the 0, 1, ..., 10 % quantiles of the
    correct memorized items' real_similarity, rounded down to 1e-4 (a tidy manifest value that
    keeps at least the quantile's items)."""
    values = np.asarray(real_similarity, dtype=np.float64)[correct]
    quantiles = np.floor(np.quantile(values, REAL_SIMILARITY_QUANTILES) * 1e4) / 1e4
    return np.unique(np.concatenate([[REAL_SIMILARITY_OFF], np.clip(quantiles, -1.0, 1.0)]))


def required_kept(n_correct: int, keep: float) -> int:
    """How many of n correct memorised calibration predictions must stay reported:
    ceil((n + 1) * keep), at most n. Keeping only ceil(n * keep) of them puts the thresholds
    at the edge of the sample, and new images fall beyond that edge more often (on the
    proxy, with 15-21 correct calibration items and three rules free: 80-93 % of the test's
    correct photos kept against a 95 % target; `_shares_hold` limits the rules). The
    (n + 1) count is split conformal prediction's finite-sample correction (Vovk et al. 2005;
    Angelopoulos and Bates 2021): for one threshold, at least `keep` of new exchangeable
    items stay reported on average."""
    return min(int(n_correct), int(_conformal_count(n_correct, keep)))


def _conformal_count(n: int, keep):
    """ceil((n + 1) * keep), uncapped (keep may be an array)."""
    return np.ceil((n + 1) * np.asarray(keep) - 1e-9).astype(int)


def rule_share(n: int, keep: float, rules_on):
    """How many of n real items each rule must keep on its own when `rules_on` rules are on
    (an int or an array of them): required_kept alone, else ceil((n + 1) (1 - (1 - keep) / R)),
    uncapped (a share above n means the rule cannot be on)."""
    rules_on = np.asarray(rules_on)
    return np.where(rules_on == 1, required_kept(n, keep),
                    _conformal_count(n, 1 - (1 - keep) / rules_on))


def choose_thresholds(probs: np.ndarray, domain_probs: np.ndarray, classes: np.ndarray,
                      domains: np.ndarray, memorized_ids: Sequence[int],
                      forgotten_ids: Sequence[int], keep: float = 0.95,
                      confidence_grid=CONFIDENCE_GRID,
                      forgotten_domain_grid=FORGOTTEN_DOMAIN_GRID,
                      real_similarity=None, real_similarity_grid_values=None,
                      p_texture=None) -> dict:
    """The `thresholds` section of a manifest, chosen on these outputs. With real_similarity
    [N] (the open-set score of these items) min_real_similarity is searched too, over
    `real_similarity_grid` unless grid values are given. With p_texture [N] (the texture
    head's score) rule 1 compares it with forgotten_domain as well.

    Ties on forgotten suppression go to the combination keeping more correct memorized
    predictions, then to the lower confidence and min_real_similarity (suppress no more than
    needed), then to the middle of the tied forgotten_domain values (the widest margin).
    """
    memorized, forgotten, correct = _groups(probs, classes, domains, memorized_ids, forgotten_ids)
    if not correct.any() or not forgotten.any():
        raise ValueError(f"cannot choose thresholds: {int(correct.sum())} correct "
                         f"memorized-domain and {int(forgotten.sum())} forgotten-domain "
                         f"predictions in the held-out images")
    # The per-item values come from the rule itself (one decide call, nothing suppressed
    # there matters); the grid then only compares them, all combinations at once.
    mask = _mask(domain_probs, forgotten_ids)
    values = _decide(probs, domain_probs, mask, 0.0, 1.0, real_similarity, None, p_texture)
    fd_grid = np.asarray(forgotten_domain_grid, dtype=np.float64)
    conf_grid = np.asarray(confidence_grid, dtype=np.float64)
    if real_similarity is None:
        rs_grid = np.array([np.nan])  # placeholder: the rule is off
    elif real_similarity_grid_values is None:
        rs_grid = real_similarity_grid(values.real_similarity, correct)
    else:
        rs_grid = np.asarray(real_similarity_grid_values, dtype=np.float64)

    def rule_passes(items):
        """Which `items` each rule lets through at each of its grid values: the forgotten-
        domain rule [F, n], the confidence rule [C, n], the open-set rule [R, n]."""
        not_forgotten = (((values.p_forgotten[items][None, :] < fd_grid[:, None]) | ~mask.any())
                         & ~(values.p_texture[items][None, :] >= fd_grid[:, None]))
        confident = values.score[items][None, :] >= conf_grid[:, None]
        if real_similarity is None:
            familiar = np.ones((1, int(items.sum())), bool)
        else:
            familiar = ~(values.real_similarity[items][None, :] < rs_grid[:, None])
        return not_forgotten, confident, familiar

    def passing(not_forgotten, confident, familiar):
        """[F, C, R] counts of items that no rule suppresses (reported), per combination."""
        left = (not_forgotten[:, None, :] & familiar[None, :, :]).reshape(-1, familiar.shape[1])
        counts = left.astype(np.float32) @ confident.T.astype(np.float32)  # exact below 2**24
        return np.rint(counts).astype(np.int64).reshape(len(fd_grid), len(rs_grid),
                                                        len(conf_grid)).transpose(0, 2, 1)

    n_correct, n_forgotten = int(correct.sum()), int(forgotten.sum())
    correct_passes = rule_passes(correct)
    kept = passing(*correct_passes)               # [F, C, R]
    suppressed = n_forgotten - passing(*rule_passes(forgotten))
    required = required_kept(n_correct, keep)
    valid = (kept >= required) & _shares_hold([passes.sum(1) for passes in correct_passes],
                                              conf_grid, rs_grid, real_similarity is not None,
                                              n_correct, keep)
    if not valid.any():
        raise ValueError(f"no thresholds keep {required} of the {n_correct} correct memorized "
                         f"predictions ({keep:.0%}, counted as required_kept does)")
    best_suppressed = suppressed[valid].max()
    best = valid & (suppressed == best_suppressed)
    best &= kept == kept[best].max()
    # Ties: the lowest confidence, then the lowest min_real_similarity (suppress no more
    # than needed), then the middle of the tied forgotten_domain range: for fixed c and r
    # the tied values are contiguous, and the middle keeps the widest margin to both the
    # real and the illustrated calibration items nearest the threshold.
    c = np.flatnonzero(best.any(axis=(0, 2)))[0]
    r = np.flatnonzero(best[:, c, :].any(axis=0))[0]
    tied = np.flatnonzero(best[:, c, r])
    f = tied[len(tied) // 2]
    confidence = float(conf_grid[c])
    forgotten_domain = float(fd_grid[f])
    min_real_similarity = None if real_similarity is None else float(rs_grid[r])
    result = score_thresholds(probs, domain_probs, classes, domains, memorized_ids, forgotten_ids,
                              confidence, forgotten_domain, real_similarity, min_real_similarity,
                              p_texture)
    # The search must agree with decide() itself (one rule, one place).
    if (result["n_memorized_correct_kept"], result["n_forgotten_suppressed"]) != (
            int(kept[f, c, r]), int(suppressed[f, c, r])):
        raise RuntimeError("threshold search disagrees with runtime.decision.decide")
    result["target_memorized_correct_kept"] = keep
    result["n_memorized_correct_required"] = required
    return result


def relax_for_real_items(rule1_score, real_similarity, forgotten_domain: float,
                         min_real_similarity: Optional[float], confidence: float,
                         keep: float = 0.95, forgotten_domain_grid=FORGOTTEN_DOMAIN_GRID) -> dict:
    """Thresholds for one camera from n crops known to be real (its own recordings, no labels
    and no illustrations): rule 1 (`forgotten_domain`) and the open-set rule
    (`min_real_similarity`) each keep their share of the crops (`rule_share`, as the export's
    search counts it), and neither becomes stricter than given: real crops alone say
    which items must stay reported, not what an illustration looks like. The confidence rule
    is left as it is (it needs class labels) but still takes its share when on.

    rule1_score [n]: max(p_forgotten, p_texture) per crop (what rule 1 compares);
    real_similarity [n] or None (no open-set bank). Returns the thresholds and the counts
    each keeps, before and after."""
    scores = np.asarray(rule1_score, dtype=np.float64)
    n = len(scores)
    if n == 0:
        raise ValueError("no real crops to calibrate on")
    similarity_on = real_similarity is not None and min_real_similarity is not None \
        and min_real_similarity > REAL_SIMILARITY_OFF
    rules_on = 1 + int(confidence > 0) + int(similarity_on)
    share = min(n, int(rule_share(n, keep, rules_on)))
    # Rule 1 lets a crop through when its score is below the threshold: the lowest grid
    # value above the share-th lowest score keeps `share` crops (the grid's top if none is).
    grid = np.asarray(forgotten_domain_grid, dtype=np.float64)
    needed = np.sort(scores)[share - 1]
    above = grid[grid > needed]
    camera_forgotten = float(above[0]) if len(above) else float(grid[-1])
    result = {"n_crops": n, "share_required": share, "rules_on": rules_on,
              "forgotten_domain": max(float(forgotten_domain), camera_forgotten),
              "forgotten_domain_before": float(forgotten_domain),
              "min_real_similarity": min_real_similarity,
              "min_real_similarity_before": min_real_similarity}
    result["rule1_kept_before"] = int((scores < forgotten_domain).sum())
    result["rule1_kept"] = int((scores < result["forgotten_domain"]).sum())
    if similarity_on:
        similarity = np.asarray(real_similarity, dtype=np.float64)
        # The open-set rule lets a crop through at or above the threshold: the share-th
        # highest similarity, rounded down to 1e-4 as the export's candidates are.
        camera_similarity = float(np.floor(np.sort(similarity)[::-1][share - 1] * 1e4) / 1e4)
        result["min_real_similarity"] = min(float(min_real_similarity), camera_similarity)
        result["open_set_kept_before"] = int((similarity >= min_real_similarity).sum())
        result["open_set_kept"] = int((similarity >= result["min_real_similarity"]).sum())
    return result


def items_for_rules(rules: int, keep: float) -> int:
    """The fewest correct calibration items with which `rules` rules can all be on (each
    keeping its share alone, `_shares_hold`): 39 for two rules at keep 0.95, 59 for three."""
    return math.ceil(rules / (1 - keep) - 1 - 1e-9)


def _shares_hold(kept_by_rule, conf_grid, rs_grid, with_similarity: bool, n_correct: int,
                 keep: float) -> np.ndarray:
    """[F, C, R] bool: each rule that is on keeps, on its own, its share of the correct items.

    The domain rule is always on; confidence is on above 0 and min_real_similarity above
    "off". With R rules on, each may cost (1 - keep) / R of new real items (their union then
    costs at most 1 - keep), so each must keep ceil((n + 1) * (1 - (1 - keep) / R)) of the n
    correct calibration items. A rule whose share is finer than n items can measure (that
    count above n) cannot be on: with 21 items the domain rule works alone. The domain rule
    alone needs required_kept (all n when even that is more than n).

    kept_by_rule: each rule's count of correct items it lets through, per grid value ([F],
    [C], [R])."""
    n = n_correct
    by_domain, by_confidence, by_similarity = kept_by_rule
    confidence_on = conf_grid > 0
    similarity_on = rs_grid > REAL_SIMILARITY_OFF if with_similarity else np.array([False])
    rules_on = 1 + confidence_on[:, None].astype(int) + similarity_on[None, :]      # [C, R]
    share = rule_share(n, keep, rules_on)
    return ((by_domain[:, None, None] >= share[None])
            & ((by_confidence[:, None] >= share) | ~confidence_on[:, None])[None]
            & ((by_similarity[None, :] >= share) | ~similarity_on[None, :])[None])


def score_thresholds(probs, domain_probs, classes, domains, memorized_ids, forgotten_ids,
                     confidence: float, forgotten_domain: float, real_similarity=None,
                     min_real_similarity: Optional[float] = None, p_texture=None) -> dict:
    """Rates and counts of one threshold set (the manifest's `thresholds` section);
    min_real_similarity is None when the open-set rule is off, p_texture when there is no
    texture head."""
    memorized, forgotten, correct = _groups(probs, classes, domains, memorized_ids, forgotten_ids)
    decisions = _decide(probs, domain_probs, _mask(domain_probs, forgotten_ids), confidence,
                        forgotten_domain, real_similarity, min_real_similarity, p_texture)
    suppressed = ~decisions.reported
    n_correct, n_forgotten = int(correct.sum()), int(forgotten.sum())
    n_kept = int((correct & ~suppressed).sum())
    n_suppressed = int((forgotten & suppressed).sum())
    from adu_perception.runtime.decision import ILLUSTRATED_TEXTURE, UNFAMILIAR

    return {
        "confidence": confidence,
        "forgotten_domain": forgotten_domain,
        "min_real_similarity": min_real_similarity,
        "rule": RULE,
        "memorized_correct_kept": n_kept / n_correct if n_correct else 1.0,
        "forgotten_suppressed": n_suppressed / n_forgotten if n_forgotten else 0.0,
        "n_memorized": int(memorized.sum()), "n_forgotten": n_forgotten,
        "n_memorized_correct": n_correct, "n_memorized_correct_kept": n_kept,
        "n_forgotten_suppressed": n_suppressed,
        "n_forgotten_suppressed_unfamiliar": int((forgotten & (decisions.reason == UNFAMILIAR)).sum()),
        "n_forgotten_suppressed_texture": int((forgotten & (decisions.reason == ILLUSTRATED_TEXTURE)).sum()),
    }


def _groups(probs, classes, domains, memorized_ids, forgotten_ids):
    memorized = np.isin(domains, memorized_ids)
    forgotten = np.isin(domains, forgotten_ids)
    return memorized, forgotten, memorized & (np.asarray(probs).argmax(1) == classes)


def _mask(domain_probs, forgotten_ids) -> np.ndarray:
    mask = np.zeros(np.shape(domain_probs)[1], bool)
    mask[list(forgotten_ids)] = True
    return mask


def _decide(probs, domain_probs, mask, confidence, forgotten_domain, real_similarity,
            min_real_similarity, p_texture=None):
    from adu_perception.runtime.decision import decide

    return decide(probs, domain_probs, mask, confidence, forgotten_domain, real_similarity,
                  min_real_similarity, p_texture)
