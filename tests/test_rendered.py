"""Rendered illustrations as training data (`adu train --rendered`) and the leave-one-out
styles benchmark. Tiny random CLIP and generated images, no shared data."""
import json

import numpy as np
import pytest
import torch

from adu_perception.training.checkpoint import load_checkpoint
from adu_perception.training.config import TrainConfig
from adu_perception.training.rendered import (render_copies, rendered_domain_names, resolve_families,
                                              with_rendered_copies)
from adu_perception.training.stylize import FAMILIES, render
from adu_perception.training.styles_benchmark import operating_point, training_config
from adu_perception.training.trainer import train


def small_split():
    """2 classes x 3 domains (0, 1 memorised; 2 forgotten) with 3, 3, 2 images per class."""
    rng = np.random.default_rng(0)
    classes = np.array([0] * 8 + [1] * 8)
    domains = np.array([0, 0, 0, 1, 1, 1, 2, 2] * 2)
    images = rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8)
    return images, classes, domains


def test_domain_names_per_mode():
    assert rendered_domain_names("off", FAMILIES) == []
    assert rendered_domain_names("pooled", ["comic", "screen"]) == ["rendered"]
    assert rendered_domain_names("per-family", ["comic", "screen"]) == ["rendered_comic", "rendered_screen"]
    with pytest.raises(ValueError, match="pooled"):
        rendered_domain_names("mixed", FAMILIES)
    with pytest.raises(ValueError, match="crayon"):
        resolve_families(["crayon"])
    assert resolve_families([]) == list(FAMILIES)


@pytest.mark.parametrize("mode", ["pooled", "per-family"])
def test_copies_weigh_like_a_real_domain_and_come_from_memorised_images(mode):
    images, classes, domains = small_split()
    families = ["comic", "line_ink"]
    out, out_classes, out_domains, names = render_copies(images, classes, domains, [0, 1], mode,
                                                         families, first_domain_id=3, seed=5)
    n_domains = 1 if mode == "pooled" else 2
    # per class and new domain: as many copies as the largest real domain holds (3)
    assert len(out) == 2 * n_domains * 3
    for c in (0, 1):
        for d in range(3, 3 + n_domains):
            assert ((out_classes == c) & (out_domains == d)).sum() == 3
    for image, c, name in zip(out, out_classes, names):
        family, source = name.split(":")
        source = int(source)
        assert domains[source] in (0, 1) and classes[source] == c  # never a forgotten image
        assert family in families and image.shape == images[source].shape
        assert not np.array_equal(image, images[source])
    if mode == "per-family":  # each family domain holds its own family only
        for d, family in zip((3, 4), families):
            assert {n.split(":")[0] for n, dd in zip(names, out_domains) if dd == d} == {family}
    again = render_copies(images, classes, domains, [0, 1], mode, families, 3, seed=5)
    assert np.array_equal(out, again[0]) and names == again[3]
    other = render_copies(images, classes, domains, [0, 1], mode, families, 3, seed=6)
    assert not np.array_equal(out, other[0])


def test_a_copy_is_the_family_rendering_of_its_source():
    images, classes, domains = small_split()
    out, _, _, names = render_copies(images, classes, domains, [0], "pooled", ["halftone_print"], 3, seed=1)
    family, source = names[0].split(":")
    assert np.array_equal(out[0], render(images[int(source)], family, [1, 0, 0, 0]))


def test_training_with_pooled_renderings_adds_one_forgotten_domain(tiny_clip, tiny_data, tmp_path):
    _, clip_config = tiny_clip
    config = TrainConfig(data=str(tiny_data), forget=["sketch"], model_config=str(clip_config),
                         method="adu", rendered="pooled", rendered_families=["comic", "screen"],
                         prompt_tokens=2, prompt_depth=1, epochs=1, shots=2, calibration_shots=1,
                         batch_size=8, device="cpu", workers=1)
    result = train(config, tmp_path / "run", progress=False)
    payload = result["payload"]
    assert payload["domain_names"] == ["cartoon", "photo", "sketch", "rendered"]
    assert payload["forgotten_domains"] == ["sketch", "rendered"]
    assert payload["rendered_domains"] == ["rendered"]
    assert result["model"].domain_head.out_features == 4
    # the run's file lists name dataset files only; copies are re-made from them
    assert all(f.split("/")[0] in ("cartoon", "photo", "sketch") for f in payload["train_files"])
    assert len(payload["train_files"]) == 3 * 3 * 2
    rendered = [s for s in result["data"].train if s.domain_index == 3]
    assert len(rendered) == 3 * 2  # 3 classes x the 2-shot budget
    # held-out splits get copies by the run's families, for choosing thresholds
    images = np.zeros((4, 32, 32, 3), np.uint8) + 90
    classes, domains = np.array([0, 0, 1, 1]), np.array([1, 2, 1, 0])
    more = with_rendered_copies(load_checkpoint(tmp_path / "run"), images, classes, domains)
    assert len(more[0]) > 4 and set(more[2][4:]) == {3}


def test_export_of_a_rendered_run_chooses_thresholds_with_its_families(tiny_clip, tiny_data, tmp_path):
    from adu_perception.export.onnx_export import export_bundle
    from adu_perception.runtime.bundle import load_bundle
    from adu_perception.training.pipeline import train_and_evaluate

    _, clip_config = tiny_clip
    weights = tmp_path / "clip.pt"
    torch.save(tiny_clip[0].model.state_dict(), weights)  # export rebuilds the same CLIP
    config = TrainConfig(data=str(tiny_data), forget=["sketch"], model_config=str(clip_config),
                         pretrained=str(weights), method="adu", rendered="pooled",
                         rendered_families=["line_ink"], prompt_tokens=2, prompt_depth=1, epochs=1,
                         shots=2, calibration_shots=1, batch_size=8, device="cpu", workers=1)
    train_and_evaluate(config, tmp_path / "run")
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle", progress=False))
    assert bundle.manifest["forgotten_domains"] == ["sketch", "rendered"]
    calibration = bundle.manifest["thresholds"]["calibration"]
    # 3 sketch calibration files + one rendered copy per class of the memorised calibration photos
    assert calibration["n_forgotten"] == 3 + 3


def test_no_rendering_leaves_the_run_as_it_was(tiny_clip, tiny_data, tmp_path):
    _, clip_config = tiny_clip
    config = TrainConfig(data=str(tiny_data), forget=["sketch"], model_config=str(clip_config),
                         method="baseline", prompt_tokens=2, prompt_depth=1, epochs=0, shots=2,
                         calibration_shots=1, device="cpu", workers=1)
    payload = train(config, tmp_path / "run", progress=False)["payload"]
    assert payload["domain_names"] == ["cartoon", "photo", "sketch"] and payload["rendered_domains"] == []
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert with_rendered_copies(payload, images, np.array([0, 1]), np.array([1, 1]))[0] is images


def test_leave_one_out_configs_never_train_on_the_held_out_unit():
    base = TrainConfig(data="d", forget=["art", "cartoon", "sketch"], rendered="pooled")
    families = list(FAMILIES)
    reference = training_config(base, "adu", None, families, base.forget, seed=1)
    assert reference.rendered == "off" and reference.forget == base.forget and reference.seed == 1
    for family in families:
        config = training_config(base, "adu", {"kind": "family", "name": family}, families, base.forget, 1)
        assert family not in config.rendered_families
        assert sorted(config.rendered_families + [family]) == sorted(families)
    config = training_config(base, "baseline", {"kind": "domain", "name": "cartoon"}, families, base.forget, 1)
    assert config.forget == ["art", "sketch"] and config.rendered_families == families


def test_operating_point_suppression_at_a_fixed_false_suppression():
    real = np.arange(100) / 100.0            # illustration scores of 100 correct real photos
    unit = np.array([0.5, 0.96, 0.97, 0.99])
    # 5 % of the real photos above the threshold (0.9405): 3 of 4 held-out items are above it
    assert operating_point(real, unit, 0.05) == pytest.approx(0.75)
    assert operating_point(real, unit, 0.0) == pytest.approx(0.0)  # nothing real suppressed


def test_styles_benchmark_scores_only_units_each_run_never_saw(tiny_clip, tiny_data, tmp_path, capsys):
    from adu_perception.cli import main

    _, clip_config = tiny_clip
    out = tmp_path / "styles.json"
    work = tmp_path / "work"
    status = main(["benchmark", "styles", "--data", str(tiny_data), "--model-config", str(clip_config),
                   "--forget", "cartoon,sketch", "--memorize", "photo", "--shots", "2",
                   "--calibration-shots", "2", "--epochs", "1", "--batch-size", "8",
                   "--prompt-tokens", "2", "--prompt-depth", "1", "--workers", "1", "--device", "cpu",
                   "--methods", "adu", "--families", "comic,screen,line_ink",
                   "--held-out-families", "comic,screen", "--held-out-domains", "cartoon",
                   "--texture-zoom", "2", "--out", str(out), "--work-dir", str(work)])
    assert status == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["held_out"] for r in rows] == ["none (no rendered training)", "comic", "screen", "cartoon"]
    assert set(rows[0]["per_unit"]) == {"comic", "screen", "line_ink"}  # reference: every family unseen
    for row in rows[1:]:
        assert set(row["per_unit"]) == {row["held_out"]}
        label = f"{row['kind']}-{row['held_out']}"
        config = load_checkpoint(work / "seed0" / f"adu-without-{label}")["config"]
        assert row["held_out"] not in config["rendered_families"] + config["forget"]
        assert "memorised training photos" in row["texture_fitted_on"] and row["held_out"] not in row["texture_fitted_on"]
        for rates in row["per_unit"].values():
            for rule in ("domain", "open-set", "texture"):
                assert 0 <= rates[rule]["suppressed"] <= 1 and 0 <= rates[rule]["kept"] <= 1
            assert len(rates["curve_knn"]) == len(report["setup"]["false_suppression_grid"])
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
    printed = capsys.readouterr().out
    assert "that one" in printed and "mean, drawn (2)" in printed and "mean, print (1)" in printed
    # two halves run in parallel merge back into the same table
    first, second = dict(report, rows=rows[:2]), dict(report, rows=rows[2:])
    for name, part in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(part))
    merged = tmp_path / "merged.json"
    assert main(["benchmark", "styles-merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "--out", str(merged)]) == 0
    assert json.loads(merged.read_text())["rows"] == rows
    assert merged.with_suffix(".md").read_text() == out.with_suffix(".md").read_text()
