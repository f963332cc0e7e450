"""`adu demo` end to end at toy sizes: world -> tiny CLIP -> baseline + ADU -> bundle ->
the real ROS 2 node over a generated drive -> report (about 30 s)."""
import json
from pathlib import Path

import pytest

from adu_perception.demo.drive import GOALS, summarise_drive
from adu_perception.demo.pipeline import DemoOptions, prepare_out_dir, run_demo
from ros_conftest_helpers import ros_domain  # noqa: F401  (autouse: a ROS domain of our own)

TOY = dict(seed=3, pretrain_images=4, downstream_images=10, pretrain_epochs=1, shots=2,
           calibration_shots=2, epochs=1, drive_frames=2, unseen_style_images=1)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    lines = []
    report = run_demo(DemoOptions(out=out, pretrain_clip=True, pretrain_families=["line_ink"], **TOY),
                      echo=lines.append)
    return out, report, "\n".join(lines)


def test_demo_writes_every_artifact_it_reports(demo_run):
    out, report, printed = demo_run
    assert json.loads((out / "report.json").read_text()) == report
    for path in report["artifacts"].values():
        assert Path(path).exists(), path
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["forgotten_domains"] == ["cartoon", "sketch", "billboard"]
    assert manifest["memorized_domains"] == ["photo"]
    # the demo's --calibration-shots reached training: that many images per (class, domain)
    assert manifest["thresholds"]["calibration"]["n_forgotten"] == TOY["calibration_shots"] * 6 * 3
    assert "| adu |" in printed and "| baseline |" in printed and "| zero-shot CLIP |" in printed
    closest = report["closest_class_captions"]  # the tiny CLIP's two classes most alike by name
    assert len(set(closest["classes"])) == 2 and -1 <= closest["cosine"] <= 1
    assert "Closest class captions of the tiny CLIP: {} / {}".format(*closest["classes"]) in printed


def test_demo_with_pretrain_clip_pretrains_its_own_tiny_clip_on_the_seed_world(demo_run):
    from adu_perception.demo.shipped_clip import unpack

    out, report, printed = demo_run
    assert "pretraining a tiny CLIP on the pretrain world" in printed and "shipped" not in printed
    assert report["tiny_clip"] == "pretrained on this seed's world" and report["forget_weight"] == 1.0
    assert "Tiny CLIP: pretrained on this seed's world." in printed and "Forget weight" not in printed
    assert len(list((out / "world" / "pretrain" / "photo" / "car").iterdir())) == TOY["pretrain_images"]
    # --pretrain-families: a medium of its own, a quarter of a world domain's images per class
    media = sorted((out / "world" / "pretrain" / "line_ink" / "car").iterdir())
    assert len(media) == TOY["pretrain_images"] // 4
    assert sorted(p.name for p in (out / "world" / "pretrain").iterdir()) == \
        ["billboard", "cartoon", "line_ink", "photo", "sketch"]
    _, shipped = unpack(out / "shipped")
    assert not _same_weights(out / "clip" / "tiny-clip-64.pt", shipped)


def test_demo_starts_from_the_shipped_clip_by_default_without_a_pretraining_world(tmp_path):
    from adu_perception.demo.shipped_clip import unpack

    out = tmp_path / "out"
    lines = []
    options = {k: v for k, v in TOY.items() if not k.startswith("pretrain_")}
    options.update(drive_frames=0, unseen_style_images=0, methods=("adu",))
    report = run_demo(DemoOptions(out=out, forget_weight=0.5, **options), echo=lines.append)
    assert "unpacking the shipped tiny CLIP" in "\n".join(lines)
    assert (report["tiny_clip"], report["forget_weight"]) == ("shipped", 0.5)
    assert "Tiny CLIP: shipped." in "\n".join(lines) and "Forget weight: 0.5 (the authors': 1)." in "\n".join(lines)
    import torch

    trained = torch.load(out / "runs" / "adu" / "checkpoint.pt", weights_only=False)
    assert trained["config"]["forget_weight"] == 0.5  # the option reached training
    assert not (out / "world" / "pretrain").exists()
    _, shipped = unpack(tmp_path / "shipped")
    assert _same_weights(out / "clip" / "tiny-clip-64.pt", shipped)
    assert report["closest_class_captions"]["cosine"] < 0.99  # the shipped one keeps its classes apart


def _same_weights(a, b) -> bool:
    import torch

    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_demo_scores_are_consistent_percentages(demo_run):
    _, report, _ = demo_run
    for scores in [report["zero_shot"], *report["metrics"].values()]:
        assert 0 <= scores["mem"] <= 100 and 0 <= scores["for"] <= 100
        mem, forget = scores["mem"], scores["for"]
        harmonic = 0 if mem + forget == 0 else 2 * mem * forget / (mem + forget)
        assert scores["h"] == pytest.approx(harmonic, abs=0.02)
    assert report["parity"]["top1_agreement"] == 1.0


def test_unseen_styles_are_scored_by_the_bundle_in_every_stylize_family(demo_run):
    from adu_perception.training.stylize import FAMILIES

    _, report, printed = demo_run
    unseen = report["unseen_styles"]
    assert list(unseen["suppressed"]) == list(FAMILIES)  # none of them is a demo domain
    assert not set(FAMILIES) & set(report["forgotten_domains"] + report["memorized_domains"])
    assert unseen["images_per_family"] == 6  # one fresh photo per class
    assert all(0 <= rate <= 1 for rate in unseen["suppressed"].values())
    # line_ink was shown to the tiny CLIP in pretraining (--pretrain-families): not in the unseen mean
    assert unseen["pretrained_on"] == ["line_ink"]
    never_seen = [rate for family, rate in unseen["suppressed"].items() if family != "line_ink"]
    assert unseen["mean_suppressed"] == pytest.approx(sum(never_seen) / (len(FAMILIES) - 1), abs=1e-4)
    assert "line_ink " in printed and "(in pretraining)" in printed and "over the 7 never seen" in printed
    assert 0 <= unseen["real_correct"] <= 6 and 0 <= unseen["real_correct_reported"] <= 1
    assert "Unseen illustration styles (6 fresh photos" in printed


def test_every_drive_object_got_an_answer_from_the_node(demo_run):
    out, report, _ = demo_run
    drive = report["drive"]
    records = [json.loads(line) for line in (out / "drive_results.jsonl").read_text().splitlines()]
    assert len(records) == drive["objects"] == drive["real"] + drive["illustrated"]
    assert drive["real"] > 0 and drive["illustrated"] > 0  # the drive mixes both
    assert {r["true_domain"] for r in records} == {"photo", "billboard"}
    assert drive["illustrated_suppressed"] == sum(not r["reported"] for r in records
                                                  if r["true_domain"] == "billboard")
    for record in records:  # the node's own JSON decision, one per published crop
        assert record["reason"] in ("reported", "forgotten_domain", "low_confidence", "unfamiliar")
        assert (record["label"] is None) == (not record["reported"])


def test_the_report_ends_with_the_drive_goals_computed_from_the_nodes_answers(demo_run):
    out, report, printed = demo_run
    records = [json.loads(line) for line in (out / "drive_results.jsonl").read_text().splitlines()]
    goals = {g["name"]: g for g in report["drive"]["goals"]}
    assert list(goals) == [name for name, *_ in GOALS]
    real = [r for r in records if r["true_domain"] == "photo"]
    billboards = [r for r in records if r["true_domain"] == "billboard"]
    suppressed = goals["billboard road users suppressed"]
    assert (suppressed["count"], suppressed["of"]) == (sum(not r["reported"] for r in billboards), len(billboards))
    reported = goals["real road users reported"]
    assert (reported["count"], reported["of"]) == (sum(r["reported"] for r in real), len(real))
    right = goals["reported real road users with the right class"]
    assert right["of"] == reported["count"]
    assert right["count"] == sum(r["reported"] and r["label"] == r["true_class"] for r in real)
    for goal in goals.values():
        assert goal["met"] == (goal["rate"] >= goal["target"])
    assert "Drive goals (seed 3)" in printed and printed.count("| >= ") == 3
    assert (out / "report.md").read_text().rstrip().endswith(printed.rstrip().splitlines()[-1])


def _record(domain, cls, reported, label=None, reason=None):
    return {"true_domain": domain, "true_class": cls, "reported": reported, "label": label,
            "reason": reason or ("reported" if reported else "low_confidence")}


def test_drive_goals_are_met_only_at_their_targets():
    records = ([_record("photo", "car", True, "car")] * 9 + [_record("photo", "car", False)]
               + [_record("billboard", "bus", False, reason="forgotten_domain")] * 8
               + [_record("billboard", "bus", True, "bus")] * 2)
    summary = summarise_drive(records, ["photo"])
    met = {g["name"]: (g["rate"], g["met"]) for g in summary["goals"]}
    assert met == {"billboard road users suppressed": (0.8, False), "real road users reported": (0.9, True),
                   "reported real road users with the right class": (1.0, True)}
    assert summary["illustrated_suppressed_as_forgotten"] == 8
    assert summary["real_suppressed_by_reason"] == {"low_confidence": 1}
    wrong = summarise_drive([_record("photo", "car", True, "bus")] * 3 + [_record("photo", "car", True, "car")],
                            ["photo"])
    assert [g["met"] for g in wrong["goals"]] == [False, True, False]  # no billboards: 0 of 0 is not met


def test_demo_command_passes_the_opt_in_training_and_node_options():
    import argparse

    from adu_perception.demo import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["demo", "--rendered", "pooled", "--context-margin", "0.1",
                              "--pretrain-unmasked", "0.3", "--forget-weight", "0.5"])
    assert (args.rendered, args.context_margin, args.pretrain_clip, args.pretrain_unmasked, args.forget_weight) == \
        ("pooled", 0.1, False, 0.3, 0.5)
    defaults = parser.parse_args(["demo"])
    assert (defaults.rendered, defaults.context_margin, defaults.pretrain_clip, defaults.forget_weight) == \
        ("off", None, False, 1.0)
    assert parser.parse_args(["demo", "--pretrain-clip"]).pretrain_clip
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--rendered", "sometimes"])


def test_pretraining_options_without_pretrain_clip_are_refused_before_any_work(tmp_path):
    import argparse

    from adu_perception.cli import CommandError
    from adu_perception.demo import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "demo"
    for argv, message in [(["--pretrain-epochs", "3"], r"\(--pretrain-epochs\) apply only with --pretrain-clip"),
                          (["--medium-captions", "0", "--pretrain-unmasked", "0.3"],
                           r"\(--pretrain-unmasked, --medium-captions\) apply only")]:
        args = parser.parse_args(["demo", "--out", str(out), *argv])
        with pytest.raises(CommandError, match=message):
            commands.demo_command(args)
    args = parser.parse_args(["demo", "--out", str(out), "--pretrain-families", "painterly"])
    with pytest.raises(CommandError, match=r"\(--pretrain-families\) apply only with --pretrain-clip"):
        commands.demo_command(args)
    # counts and seeds out of range are argparse errors, before anything runs
    for argv in (["--seed", "-1"], ["--downstream-images", "0"], ["--shots", "0"],
                 ["--calibration-shots", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["demo", "--out", str(out), *argv])
    with pytest.raises(FileNotFoundError, match="model config not found"):  # before the world
        run_demo(DemoOptions(out=out, data=str(tmp_path), clip="x", model_config=str(tmp_path / "no.json"),
                             forget=["cartoon"]), echo=lambda _: None)
    with pytest.raises(ValueError, match="cannot be combined with --clip"):
        run_demo(DemoOptions(out=out, pretrain_clip=True, clip="ViT-B-16"), echo=lambda _: None)
    with pytest.raises(ValueError, match=r"--pretrain-families: unknown illustration family\(ies\) oil_on_canvas; choose from halftone_print"):
        run_demo(DemoOptions(out=out, pretrain_clip=True, pretrain_families=["oil_on_canvas"]), echo=lambda _: None)
    assert not out.exists()


def test_rerun_replaces_its_own_folder_but_not_someone_elses(tmp_path):
    own = tmp_path / "own"
    prepare_out_dir(own, force=False)
    (own / "old.txt").write_text("from the previous run")
    prepare_out_dir(own, force=False)
    assert not (own / "old.txt").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("not ours")
    with pytest.raises(ValueError, match="not written by `adu demo`"):
        prepare_out_dir(foreign, force=False)
    assert (foreign / "precious.txt").exists()


def test_a_real_dataset_needs_a_clip_and_domains_to_forget(tmp_path):
    with pytest.raises(ValueError, match="name the CLIP"):
        run_demo(DemoOptions(out=tmp_path / "a", data=str(tmp_path)), echo=lambda _: None)
    with pytest.raises(ValueError, match="--forget"):
        run_demo(DemoOptions(out=tmp_path / "b", data=str(tmp_path), clip="ViT-B-16"),
                 echo=lambda _: None)


def test_pretraining_media_are_world_photos_redrawn_deterministically(tmp_path):
    import cv2
    import numpy as np

    from adu_perception.demo import world
    from adu_perception.demo.unseen_styles import write_pretraining_media

    for name in ("a", "b"):
        write_pretraining_media(tmp_path / name, ["painterly", "pictogram"], per_class=2, seed=5, size=48)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 2 * len(world.CLASSES) * 2
    for path in files:
        first, second = (cv2.imread(str(tmp_path / n / path)) for n in ("a", "b"))
        assert first.shape == (48, 48, 3) and np.array_equal(first, second)
    painterly, pictogram = (cv2.imread(str(tmp_path / "a" / f / "car" / "0000.png")) for f in ("painterly", "pictogram"))
    assert not np.array_equal(painterly, pictogram)  # each family draws the same photo its own way
