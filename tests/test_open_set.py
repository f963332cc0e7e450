"""The open-set "real-likeness" score (runtime/open_set.py), the decision rule's "unfamiliar"
branch (runtime/decision.py) and the search for min_real_similarity (export/thresholds.py),
on hand-made arrays. `write_open_set_bundle` (used by the runtime, replay and node tests) makes
a format-2 colour bundle whose memory bank holds green "real cars" only."""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from adu_perception.export.thresholds import choose_thresholds, real_similarity_grid
from adu_perception.runtime.bundle import sha256_file
from adu_perception.runtime.decision import (FORGOTTEN_DOMAIN, LOW_CONFIDENCE, REASONS, REPORTED,
                                             UNFAMILIAR, decide, describe)
from adu_perception.runtime.open_set import OpenSet, real_similarity

# Colour bundle (tests/ros_conftest_helpers.py): green = real car. The bank holds greens; a
# teal car (TEAL) is still "car, photo" to the classifier but lies away from every green.
BANK_COLOURS = [(20, 200, 30), (30, 180, 40), (10, 220, 20), (40, 210, 50)]
GREEN, TEAL, RED = (20, 200, 30), (20, 200, 130), (210, 20, 20)
OPEN_SET_THRESHOLD = 0.99  # green ~0.999, teal ~0.975 with k = 2 (checked in the tests)


def write_open_set_bundle(source: Path, folder: Path, threshold: float = OPEN_SET_THRESHOLD,
                          k: int = 2) -> Path:
    """A copy of the colour bundle at `source` with a format-2 open_set section and a bank of
    the graph's embeddings of BANK_COLOURS."""
    from adu_perception.runtime.images import preprocess
    from adu_perception.runtime.predictor import Predictor
    from ros_conftest_helpers import solid

    shutil.copytree(source, folder)
    predictor = Predictor(folder, backend="onnxruntime-cpu")
    crops = [solid(colour) for colour in BANK_COLOURS]
    bank = predictor.predict(preprocess(crops, predictor.bundle.input_size))["embeddings"]
    np.save(folder / "memory_bank.npy", bank.astype(np.float16))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 2
    manifest["open_set"] = {"score": "knn_cosine", "k": k, "bank_file": "memory_bank.npy",
                            "bank_sha256": sha256_file(folder / "memory_bank.npy"),
                            "n_bank": len(bank), "bank_from": "green solid colours (test)"}
    manifest["thresholds"]["min_real_similarity"] = threshold
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


# -- kNN score ------------------------------------------------------------------------------

def direct_knn(embeddings, bank, k):
    """Plain loops: cosine to every bank row, sorted, mean of the k largest."""
    out = []
    for e in embeddings:
        cosines = sorted((float(np.dot(e, b) / np.linalg.norm(e) / np.linalg.norm(b))
                          for b in bank), reverse=True)
        out.append(np.mean(cosines[:min(k, len(bank))]))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 3, 10])  # 10 > M = 4: clipped to the whole bank
def test_knn_score_matches_a_direct_computation(k):
    rng = np.random.default_rng(k)
    embeddings = rng.standard_normal((5, 6)) * 3.0  # not unit length: re-normalised
    bank = rng.standard_normal((4, 6)).astype(np.float16)
    got = real_similarity(embeddings, bank, k)
    np.testing.assert_allclose(got, direct_knn(embeddings, bank.astype(np.float64), k), atol=1e-5)
    assert got.shape == (5,) and (np.abs(got) <= 1 + 1e-6).all()


def test_knn_score_on_exact_small_cases_and_bad_inputs():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    items = np.array([[2.0, 0.0], [0.0, -5.0]])
    assert real_similarity(items, bank, 1).tolist() == [1.0, 0.0]
    assert real_similarity(items, bank, 2).tolist() == [0.5, 0.0]
    assert real_similarity(items, bank, 3).tolist() == pytest.approx([0.0, -1 / 3])
    assert real_similarity(np.zeros((0, 2)), bank, 1).shape == (0,)
    assert OpenSet("knn_cosine", 2, bank).similarity(items).tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match="same E"):
        real_similarity(items, np.ones((2, 3)), 1)
    with pytest.raises(ValueError, match="empty"):
        real_similarity(items, np.zeros((0, 2)), 1)
    with pytest.raises(ValueError, match="k must be"):
        real_similarity(items, bank, 0)
    with pytest.raises(ValueError, match="unknown open-set score 'mahalanobis'"):
        OpenSet("mahalanobis", 1, bank).similarity(items)


# -- decision rule with the open-set branch --------------------------------------------------

FORGOTTEN = np.array([False, True, True])


def test_every_branch_of_decide_including_unfamiliar_at_the_threshold():
    probs = np.array([[0.75, 0.25, 0.0]] * 6 + [[0.25, 0.5, 0.25]])
    domains = np.array([[1.0, 0.0, 0.0]] * 7)
    domains[0] = [0.25, 0.5, 0.25]  # p_forgotten 0.75 >= 0.5: forgotten, whatever else holds
    # Similarities exact in binary; threshold 0.75.
    similarity = np.array([0.0, 0.75, 0.75 - 2 ** -20, -1.0, 1.0, 0.5, 1.0])
    result = decide(probs, domains, FORGOTTEN, confidence=0.5, forgotten_domain=0.5,
                    real_similarity=similarity, min_real_similarity=0.75)
    assert result.reason.tolist() == [FORGOTTEN_DOMAIN,  # rule 1 comes first
                                      REPORTED,          # exactly at the threshold: not below
                                      UNFAMILIAR,        # just below
                                      UNFAMILIAR, REPORTED, UNFAMILIAR,
                                      REPORTED]          # max(probs) 0.5 == confidence
    assert result.real_similarity.tolist() == similarity.tolist()
    # Rule 2 before rule 3: unconfident and unfamiliar is "unfamiliar"; familiar is "low".
    low = np.array([[0.25, 0.5, 0.25]])
    photo = np.array([[1.0, 0.0, 0.0]])
    assert decide(low, photo, FORGOTTEN, 0.75, 0.5, [0.0], 0.5).reason.tolist() == [UNFAMILIAR]
    assert decide(low, photo, FORGOTTEN, 0.75, 0.5, [0.5], 0.5).reason.tolist() == [LOW_CONFIDENCE]
    assert REASONS[UNFAMILIAR] == "unfamiliar" and REASONS[:3] == (
        "reported", "forgotten_domain", "low_confidence")


def test_without_similarity_or_threshold_the_rule_is_the_old_one():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 50)
    domains = rng.dirichlet(np.ones(3), 50)
    old = decide(probs, domains, FORGOTTEN, 0.5, 0.5)
    assert np.isnan(old.real_similarity).all()
    similarity = rng.uniform(-1, 1, 50)
    for args in [(None, None), (similarity, None), (None, 0.5)]:
        new = decide(probs, domains, FORGOTTEN, 0.5, 0.5, *args)
        assert new.reason.tolist() == old.reason.tolist()
        assert UNFAMILIAR not in new.reason
    with_rule = decide(probs, domains, FORGOTTEN, 0.5, 0.5, similarity, 0.5)
    assert UNFAMILIAR in with_rule.reason
    # Only items the old rule reported or suppressed for low confidence can turn unfamiliar.
    changed = with_rule.reason != old.reason
    assert (with_rule.reason[changed] == UNFAMILIAR).all()
    assert (old.reason[changed] != FORGOTTEN_DOMAIN).all()
    with pytest.raises(ValueError, match="real_similarity has shape"):
        decide(probs, domains, FORGOTTEN, 0.5, 0.5, similarity[:3], 0.5)


def test_describe_carries_real_similarity_into_json():
    probs, domains = np.array([[0.9, 0.1, 0.0]] * 2), np.array([[1.0, 0.0, 0.0]] * 2)
    names = (["car", "bus", "sign"], ["photo", "cartoon", "sketch"])
    result = decide(probs, domains, FORGOTTEN, 0.5, 0.5, [0.25, 0.875], 0.5)
    unfamiliar, reported = (d.to_dict() for d in describe(probs, domains, result, *names))
    assert (unfamiliar["reason"], unfamiliar["suppressed"], unfamiliar["label"]) == (
        "unfamiliar", True, None)
    assert (unfamiliar["real_similarity"], reported["real_similarity"]) == (0.25, 0.875)
    assert reported["reason"] == "reported"
    off = describe(probs, domains, decide(probs, domains, FORGOTTEN, 0.5, 0.5), *names)
    assert off[0].to_dict()["real_similarity"] is None
    json.dumps(unfamiliar)


# -- threshold search ------------------------------------------------------------------------

def crafted_calibration():
    """40 correct memorized items (real_similarity 0.80..0.99, all confident and photo-like)
    and 30 forgotten items: 10 the domain head flags, 20 it calls photo, confident, of an
    unseen style: real_similarity 0.30..0.59, below every real item's."""
    real = np.linspace(0.80, 0.99, 40)
    unseen = np.linspace(0.30, 0.59, 20)
    probs = np.array([[0.9, 0.1]] * 70)
    domain_probs = np.array([[0.8, 0.2]] * 40 + [[0.1, 0.9]] * 10 + [[0.8, 0.2]] * 20)
    similarity = np.concatenate([real, np.full(10, 0.9), unseen])
    classes = np.zeros(70, int)
    domains = np.array([0] * 40 + [1] * 30)
    return probs, domain_probs, classes, domains, similarity, real, unseen


def test_threshold_search_finds_a_min_real_similarity_that_separates_real_from_unseen():
    probs, domain_probs, classes, domains, similarity, real, unseen = crafted_calibration()
    without = choose_thresholds(probs, domain_probs, classes, domains, [0], [1])
    assert without["forgotten_suppressed"] == pytest.approx(10 / 30)  # the unseen style passes
    assert without["min_real_similarity"] is None
    result = choose_thresholds(probs, domain_probs, classes, domains, [0], [1],
                               real_similarity=similarity)
    assert unseen.max() < result["min_real_similarity"] <= real.min()
    assert result["min_real_similarity"] in real_similarity_grid(similarity, np.arange(70) < 40)
    assert result["forgotten_suppressed"] == 1.0 and result["memorized_correct_kept"] == 1.0
    assert result["n_forgotten_suppressed_unfamiliar"] == 20
    # Ties: forgotten_domain in the middle of the tied 0.21..0.90 (between the real items'
    # 0.2 and the flagged ones' 0.9), confidence stays off, and the lowest grid value that
    # suppresses the unseen style wins.
    assert (result["forgotten_domain"], result["confidence"]) == (0.56, 0.0)
    assert result["min_real_similarity"] == np.floor(real.min() * 1e4) / 1e4


def test_threshold_search_keeps_what_it_must():
    # Unseen items overlap the real ones: the lowest 10 % of the real items look as unseen as
    # the forgotten ones. Suppressing them all would drop the real rate to 90 %: not allowed.
    real = np.linspace(0.5, 0.99, 100)
    unseen = np.linspace(0.5, 0.6, 20)
    probs = np.array([[0.9, 0.1]] * 120)
    domain_probs = np.array([[0.8, 0.2]] * 120)
    classes, domains = np.zeros(120, int), np.array([0] * 100 + [1] * 20)
    similarity = np.concatenate([real, unseen])
    result = choose_thresholds(probs, domain_probs, classes, domains, [0], [1], keep=0.95,
                               real_similarity=similarity)
    assert result["memorized_correct_kept"] >= 0.95
    assert 0 < result["forgotten_suppressed"] < 1
    kept = (real >= result["min_real_similarity"]).mean()
    assert kept == result["memorized_correct_kept"]
    # With keep 1.0 only "no real item below" is allowed.
    strict = choose_thresholds(probs, domain_probs, classes, domains, [0], [1], keep=1.0,
                               real_similarity=similarity)
    assert strict["memorized_correct_kept"] == 1.0 and strict["min_real_similarity"] <= real.min()


def test_threshold_search_is_fast_on_a_thousand_items():
    rng = np.random.default_rng(1)
    n = 1000
    probs = rng.dirichlet(np.ones(5) * 0.3, n)
    domain_probs = rng.dirichlet(np.ones(3), n)
    classes = probs.argmax(1) * (rng.random(n) < 0.8)
    domains = rng.integers(0, 3, n)
    similarity = rng.uniform(0.2, 1.0, n)
    start = time.perf_counter()
    result = choose_thresholds(probs, domain_probs, classes, domains, [0], [1, 2],
                               real_similarity=similarity)
    assert time.perf_counter() - start < 2.0
    assert result["memorized_correct_kept"] >= 0.95
