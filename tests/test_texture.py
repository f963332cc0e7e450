"""The texture head (runtime/texture.py, training/texture_head.py) and its place in rule 1:
numpy stem statistics against the model's own convolution, the fit, the decision branch, the
threshold search, and bundles with and without a head. Tiny random CLIP, real ONNX Runtime."""
import json
import shutil

import numpy as np
import pytest

from adu_perception.export.thresholds import choose_thresholds
from adu_perception.runtime.bundle import BundleError, load_bundle, sha256_file
from adu_perception.runtime.decision import FORGOTTEN_DOMAIN, ILLUSTRATED_TEXTURE, REPORTED, decide
from adu_perception.runtime.images import preprocess
from adu_perception.runtime.predictor import Predictor
from adu_perception.runtime.texture import TextureHead, stem_statistics, tiles


def test_stem_statistics_are_the_models_first_layer(tiny_clip):
    import torch

    from adu_perception.training.texture_head import stem_weight
    from adu_perception.training.trainer import to_model_input

    clip, _ = tiny_clip
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    cut = tiles(images, 32)
    assert cut.shape == (12, 32, 32, 3)
    assert (cut[1] == images[0, :32, 32:]).all() and (cut[7] == images[1, 32:, 32:]).all()
    with torch.no_grad():
        out = clip.model.visual.conv1(to_model_input(torch.from_numpy(cut), clip.mean, clip.std)).flatten(2)
    reference = torch.cat([out.mean(2), out.std(2, unbiased=False)], 1).numpy()
    ours = stem_statistics(cut, stem_weight(clip.model), clip.mean, clip.std)
    assert ours.shape == (12, 2 * clip.model.visual.conv1.out_channels)
    assert np.abs(ours - reference).max() < 1e-4


def noisy(n, size, seed):
    """Photo-like: fine pixel noise everywhere."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 40, (n, size, size, 3)), 0, 255).astype(np.uint8)


def flat(n, size, seed):
    """Drawing-like: flat colour regions with hard edges."""
    rng = np.random.default_rng(seed)
    images = np.repeat(rng.integers(0, 256, (n, 1, 1, 3)), size, 1).repeat(size, 2).astype(np.uint8)
    images[:, size // 3:, : size // 2] = rng.integers(0, 256, (n, 1, 1, 3))
    return images


@pytest.fixture(scope="module")
def fitted_head(tiny_clip):
    from adu_perception.training.texture_head import fit_texture_head, stem_weight

    clip, _ = tiny_clip
    return fit_texture_head(stem_weight(clip.model), clip.mean, clip.std, noisy(12, 64, 0), flat(12, 64, 1),
                            zoom=2, tile=32, fitted_on="noise against flat colour")


def test_the_fitted_head_tells_unseen_textures_apart(fitted_head):
    assert fitted_head.input_size == 64
    photos, drawings = fitted_head.probability(noisy(8, 64, 5)), fitted_head.probability(flat(8, 64, 6))
    assert photos.max() < 0.5 < drawings.min()
    assert fitted_head.tile_logits(noisy(2, 64, 7)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"needs uint8 \[N, 64, 64, 3\]"):
        fitted_head.probability(noisy(2, 32, 0))


def test_a_saved_head_loads_the_same_and_damage_is_named(fitted_head, tmp_path):
    path = fitted_head.save(tmp_path / "head.npz")
    loaded = TextureHead.load(path, zoom=2, tile=32)
    images = flat(3, 64, 9)
    assert np.allclose(loaded.probability(images), fitted_head.probability(images), atol=1e-6)
    arrays = dict(np.load(path))
    np.savez(tmp_path / "nan.npz", **{**arrays, "coef": arrays["coef"] * np.nan})
    with pytest.raises(ValueError, match="non-finite"):
        TextureHead.load(tmp_path / "nan.npz", 2, 32)
    np.savez(tmp_path / "short.npz", **{**arrays, "coef": arrays["coef"][:3]})
    with pytest.raises(ValueError, match="coef has shape"):
        TextureHead.load(tmp_path / "short.npz", 2, 32)
    with pytest.raises(ValueError, match="tile 30 is not a multiple"):
        TextureHead.load(path, 2, 30)


def test_rule_one_reads_the_texture_score_at_the_same_threshold():
    probs = np.array([[0.9, 0.1]] * 4)
    domain_probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.9, 0.1]])  # photo, forgotten
    mask = np.array([False, True])
    p_texture = np.array([0.1, 0.7, 0.9, np.nan])
    d = decide(probs, domain_probs, mask, 0.5, 0.6, p_texture=p_texture)
    assert list(d.reason) == [REPORTED, ILLUSTRATED_TEXTURE, FORGOTTEN_DOMAIN, REPORTED]
    assert np.isnan(d.p_texture[3]) and d.p_texture[1] == pytest.approx(0.7)
    assert decide(probs, domain_probs, mask, 0.5, 0.75, p_texture=p_texture).reported[1]  # 0.7 < 0.75
    assert np.isnan(decide(probs, domain_probs, mask, 0.5, 0.6).p_texture).all()  # no head
    with pytest.raises(ValueError, match=r"p_texture has shape \(2,\)"):
        decide(probs, domain_probs, mask, 0.5, 0.6, p_texture=p_texture[:2])


def test_the_threshold_search_counts_the_texture_score_as_part_of_rule_one():
    # 20 correct photos (domain 0) and 10 forgotten items (domain 1) the domain head misses;
    # the texture score separates them.
    n_real, n_fake = 20, 10
    probs = np.tile([0.95, 0.05], (n_real + n_fake, 1))
    classes = np.zeros(n_real + n_fake, int)
    domains = np.r_[np.zeros(n_real, int), np.ones(n_fake, int)]
    domain_probs = np.tile([0.9, 0.1], (n_real + n_fake, 1))
    p_texture = np.r_[np.linspace(0.0, 0.3, n_real), np.linspace(0.7, 0.9, n_fake)]
    without = choose_thresholds(probs, domain_probs, classes, domains, [0], [1])
    with_texture = choose_thresholds(probs, domain_probs, classes, domains, [0], [1], p_texture=p_texture)
    assert without["n_forgotten_suppressed"] == 0
    assert with_texture["n_forgotten_suppressed"] == n_fake == with_texture["n_forgotten_suppressed_texture"]
    assert with_texture["n_memorized_correct_kept"] == n_real
    assert 0.3 < with_texture["forgotten_domain"] <= 0.7


@pytest.fixture(scope="module")
def texture_bundle(tiny_run, tmp_path_factory):
    from adu_perception.export.onnx_export import export_bundle

    # The tiny world's images are 40 x 48 px and its model reads 32 px: zoom 1 (zoom 2 is refused).
    return export_bundle(tiny_run, tmp_path_factory.mktemp("texture") / "bundle", progress=False,
                         texture_head=True, texture_zoom=1)


def test_export_writes_a_texture_head_the_runtime_uses(texture_bundle):
    manifest = json.loads((texture_bundle / "manifest.json").read_text())
    section = manifest["texture"]
    assert manifest["format_version"] == 3
    assert section["zoom"] == 1 and section["tile"] == manifest["input_size"] == section["input_size"]
    assert "memorised training photos" in section["fitted_on"]
    assert "each camera artefact" in section["fitted_on"]  # on by default (training.camera_artefacts)
    assert "n_forgotten_suppressed_texture" in manifest["thresholds"]
    bundle = load_bundle(texture_bundle)
    assert bundle.texture is not None and bundle.texture.input_size == section["input_size"]
    predictor = Predictor(bundle, backend="onnxruntime-cpu")
    crops = [noisy(1, 50, 0)[0], flat(1, 70, 1)[0]]
    decisions = predictor.classify_crops(crops)
    direct = predictor.classify(preprocess(crops, bundle.input_size),
                                texture_images=preprocess(crops, bundle.texture.input_size))
    assert [d.to_dict() for d in decisions] == [d.to_dict() for d in direct]
    assert all(0.0 < d.p_texture < 1.0 for d in decisions)
    with pytest.raises(ValueError, match="has a texture head: pass texture_images"):
        predictor.classify(preprocess(crops, bundle.input_size))


def test_a_head_is_not_fitted_on_enlarged_images(tiny_run, tmp_path):
    from adu_perception.export.onnx_export import ExportError, export_bundle

    with pytest.raises(ExportError, match=r"reads crops at 64 px, but the run's training images are 40 px"):
        export_bundle(tiny_run, tmp_path / "bundle", progress=False, texture_head=True, texture_zoom=2)
    assert not (tmp_path / "bundle").exists()


def test_bundles_without_a_head_still_classify_crops(tiny_bundle):
    predictor = Predictor(tiny_bundle, backend="onnxruntime-cpu")
    (decision,) = predictor.classify_crops([flat(1, 40, 2)[0]])
    assert decision.p_texture is None
    with pytest.raises(ValueError, match="no texture head"):
        predictor.classify(preprocess([flat(1, 40, 2)[0]], predictor.bundle.input_size),
                           texture_images=flat(1, 64, 2))


def damaged_copy(bundle, folder, edit):
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(folder, manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("what, problem", [
    ("tampered", r"sha256 mismatch: .*texture_head.npz .*texture head edited or replaced"),
    ("missing", r"texture head missing: .*texture_head.npz"),
    ("format 2", r"texture needs format_version 3"),
    ("score", r"texture.score 'sift' is unknown"),
    ("tile", r"texture.tile 16 differs from input_size"),
    ("zoom", r"texture.zoom must be an integer >= 1, got 0"),
])
def test_a_damaged_texture_section_is_refused_by_name(texture_bundle, tmp_path, what, problem):
    def edit(folder, manifest):
        head, section = folder / "texture_head.npz", manifest["texture"]
        if what == "tampered":
            arrays = dict(np.load(head))
            np.savez(head, **{**arrays, "intercept": arrays["intercept"] + 1})
        elif what == "missing":
            head.unlink()
        elif what == "format 2":
            manifest["format_version"] = 2
        elif what == "score":
            section["score"] = "sift"
        elif what == "tile":
            section["tile"] = 16
        elif what == "zoom":
            section["zoom"] = 0

    folder = damaged_copy(texture_bundle, tmp_path / what.replace(" ", "_"), edit)
    with pytest.raises(BundleError, match=problem):
        load_bundle(folder)


def test_a_texture_file_that_is_no_head_is_refused(texture_bundle, tmp_path):
    def edit(folder, manifest):
        (folder / "texture_head.npz").write_bytes(b"not a zip")
        manifest["texture"]["sha256"] = sha256_file(folder / "texture_head.npz")

    folder = damaged_copy(texture_bundle, tmp_path / "garbage", edit)
    with pytest.raises(BundleError, match="cannot use texture head .*texture_head.npz"):
        load_bundle(folder)


def test_replay_runs_a_texture_bundle_and_counts_its_reason(texture_bundle, tmp_path):
    import cv2

    from adu_perception.runtime.replay import replay

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate([noisy(1, 90, 3)[0], flat(1, 90, 4)[0]]):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    out = tmp_path / "results.jsonl"
    summary = replay(texture_bundle, folder, backend="onnxruntime-cpu", out=out, echo=lambda _: None)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["results"][0]["p_texture"] is not None for r in records)
    counts = summary["."]
    reasons = [r["results"][0]["reason"] for r in records]
    assert counts["illustrated_texture"] == reasons.count("illustrated_texture")


def test_the_latency_benchmark_times_the_texture_head_too(texture_bundle):
    from adu_perception.export.latency import bundle_latency, format_table

    result = bundle_latency(texture_bundle, providers=["CPUExecutionProvider"], batches=(1, 4),
                            warmup=1, repeats=3)
    assert [row["batch"] for row in result["texture"]] == [1, 4]
    assert all(0 < row["median_ms"] <= row["p90_ms"] for row in result["texture"])
    assert "texture head (numpy, CPU, 32 px crops), batch 4" in format_table(result)


def test_a_run_trained_with_rendered_families_fits_its_head_on_them(tiny_run, texture_bundle, tmp_path):
    from adu_perception.export.onnx_export import export_bundle
    from adu_perception.training.checkpoint import load_checkpoint
    from adu_perception.training.config import TrainConfig
    from adu_perception.training.pipeline import train_and_evaluate

    config = TrainConfig(**{**load_checkpoint(tiny_run)["config"], "rendered": "pooled",
                            "rendered_families": ["comic", "line_ink"]})
    train_and_evaluate(config, tmp_path / "run")
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle", progress=False, texture_head=True,
                           texture_zoom=1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "drawn in 2 families (line_ink, comic)" in manifest["texture"]["fitted_on"]
    # the calibration photos' rendered copies (drawn at the head's size) count as forgotten items
    plain = json.loads((texture_bundle / "manifest.json").read_text())
    assert (manifest["thresholds"]["calibration"]["n_forgotten"]
            > plain["thresholds"]["calibration"]["n_forgotten"])
    assert load_bundle(bundle).texture is not None
