"""`adu calibrate`: per-camera thresholds from real crops of that camera.

The relaxation on crafted scores (each rule keeps its share, counted as the export counts it;
nothing gets stricter; the open-set rule off stays off), then the whole command on the colour
bundle with a folder of "camera" crops (one of them corrupt): the written parameters keep the
share when the node's predictor applies them, and one grid step less would not.
"""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from adu_perception.cli import main
from adu_perception.export.camera_calibration import (CalibrationError, calibrate_camera,
                                                      parameters_yaml)
from adu_perception.export.thresholds import relax_for_real_items, required_kept
from adu_perception.runtime.predictor import Predictor
from ros_conftest_helpers import color_bundle, solid  # noqa: F401


def test_rule1_is_raised_just_enough_to_keep_the_share():
    scores = np.linspace(0.0, 0.99, 100)  # 0.00, 0.01, ...: 50 below the bundle's 0.5
    result = relax_for_real_items(scores, None, forgotten_domain=0.5, min_real_similarity=None,
                                  confidence=0.0)
    share = required_kept(100, 0.95)
    assert result["share_required"] == share == 96
    assert result["rule1_kept_before"] == 50
    assert (scores < result["forgotten_domain"]).sum() >= share
    assert (scores < result["forgotten_domain"] - 0.01).sum() < share  # the lowest such grid value
    assert result["rule1_kept"] == (scores < result["forgotten_domain"]).sum()


def test_nothing_gets_stricter():
    scores = np.full(50, 0.1)
    result = relax_for_real_items(scores, np.full(50, 0.99), forgotten_domain=0.5,
                                  min_real_similarity=0.2, confidence=0.0)
    assert result["forgotten_domain"] == 0.5
    assert result["min_real_similarity"] == 0.2


def test_each_rule_on_takes_its_share():
    scores = np.linspace(0.0, 0.99, 100)
    alone = relax_for_real_items(scores, None, 0.5, None, confidence=0.0)
    with_confidence = relax_for_real_items(scores, None, 0.5, None, confidence=0.3)
    assert (alone["rules_on"], with_confidence["rules_on"]) == (1, 2)
    # Two rules: each may cost 2.5 % of the crops, so rule 1 must keep more of them alone.
    assert with_confidence["share_required"] > alone["share_required"]
    assert with_confidence["forgotten_domain"] > alone["forgotten_domain"]


def test_open_set_rule_is_lowered_to_its_share_and_stays_off_when_off():
    scores = np.zeros(100)
    similarity = np.linspace(0.5, 0.99, 100)
    result = relax_for_real_items(scores, similarity, 0.5, min_real_similarity=0.9, confidence=0.0)
    assert result["rules_on"] == 2
    assert result["open_set_kept_before"] < result["share_required"] <= result["open_set_kept"]
    assert result["min_real_similarity"] < 0.9
    assert (similarity >= result["min_real_similarity"]).sum() >= result["share_required"]
    off = relax_for_real_items(scores, similarity, 0.5, min_real_similarity=-1.0, confidence=0.0)
    assert off["min_real_similarity"] == -1.0 and "open_set_kept" not in off
    assert off["rules_on"] == 1


def test_scores_at_the_top_cap_the_threshold_at_the_grid_top_and_empty_input_is_refused():
    result = relax_for_real_items(np.ones(20), None, 0.5, None, 0.0)
    assert result["forgotten_domain"] == 1.0
    with pytest.raises(ValueError, match="no real crops"):
        relax_for_real_items(np.array([]), None, 0.5, None, 0.0)


@pytest.fixture
def camera_crops(tmp_path):
    """A camera with an orange cast: crops from green (photo-like to the colour bundle) to
    orange-red (cartoon-like), all of them real; plus one corrupt file."""
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, red in enumerate(np.linspace(40, 240, 40).astype(int)):
        rgb = solid((int(red), 110, 40), 40, 30)
        cv2.imwrite(str(folder / f"crop_{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_calibrated_thresholds_keep_the_share_where_the_node_applies_them(color_bundle, camera_crops):
    result = calibrate_camera(color_bundle, camera_crops)
    assert result["n_crops"] == 40 and result["unreadable"] == 1
    assert result["rules_on"] == 2  # the colour bundle's confidence rule (0.5) is on
    assert result["forgotten_domain"] > result["forgotten_domain_before"] == 0.5

    predictor = Predictor(color_bundle, backend="onnxruntime-cpu")
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
             for p in sorted(camera_crops.glob("crop_*.png"))]

    def passing(threshold):
        return sum(d.reason != "forgotten_domain"
                   for d in predictor.classify_crops(crops, forgotten_domain=threshold))

    assert passing(0.5) < result["share_required"] <= passing(result["forgotten_domain"])
    assert passing(round(result["forgotten_domain"] - 0.01, 2)) < result["share_required"]

    parameters = yaml.safe_load(parameters_yaml(result, "front"))
    assert parameters == {"/front/classifier_node": {"ros__parameters": {
        "forgotten_domain_threshold": result["forgotten_domain"]}}}
    assert list(yaml.safe_load(parameters_yaml(result))) == ["/**/classifier_node"]
    # rcl's rule (tokens of letters, digits, '_', not starting with a digit): a file the node
    # could not parse at start is never written
    for bad in ("front camera", "front-left", "1cam", "front.cam", "front//left", "a:b"):
        with pytest.raises(CalibrationError, match="not a ROS namespace"):
            parameters_yaml(result, bad)
    assert list(yaml.safe_load(parameters_yaml(result, "/car_1/front/"))) == ["/car_1/front/classifier_node"]


def test_crops_are_cut_as_the_node_cuts_them(color_bundle, camera_crops):
    # A 1 x 2 grid: two crops per frame; regions outside every frame: nothing to calibrate on.
    assert calibrate_camera(color_bundle, camera_crops, grid=(1, 2))["n_crops"] == 80
    with pytest.raises(CalibrationError, match="no crops could be cut"):
        calibrate_camera(color_bundle, camera_crops, regions=[(1000, 1000, 10, 10)])
    with pytest.raises(CalibrationError, match="context margin"):
        calibrate_camera(color_bundle, camera_crops, context_margin=2.0)


def test_calibrate_command_writes_the_parameter_file(color_bundle, camera_crops, tmp_path, capsys):
    out = tmp_path / "front.yaml"
    assert main(["calibrate", "--bundle", str(color_bundle), "--input", str(camera_crops),
                 "--namespace", "front", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "40 real crops (1 unreadable frames skipped)" in printed and "forgotten_domain 0.50 ->" in printed
    # Two rules on: each keeps ceil(41 x 0.975) = 40 of 40 crops, and the command says so.
    assert "with 40 crops every one must stay reported" in printed
    value = yaml.safe_load(out.read_text())["/front/classifier_node"]["ros__parameters"]
    assert value["forgotten_domain_threshold"] > 0.5


@pytest.mark.parametrize("arguments, message", [
    (["--input", "{missing}"], "input not found"),
    (["--input", "{empty}"], "no images"),
    (["--input", "{crops}", "--keep", "1.5"], "keep 1.5"),
    (["--input", "{crops}", "--out", "{empty}"], "is a folder: give a file name"),
    (["--input", "{crops}", "--out", "{missing}/front.yaml"], "not found"),
])
def test_calibrate_command_refuses_bad_input_with_a_clear_message(
        color_bundle, camera_crops, tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty", "crops": camera_crops}
    arguments = [a.format(**paths) for a in arguments]
    assert main(["calibrate", "--bundle", str(color_bundle), *arguments]) != 0
    assert message in capsys.readouterr().err


def test_calibration_runs_without_torch(color_bundle, camera_crops):
    """It runs on the vehicle's own computer, beside the node: no torch import."""
    code = ("import sys\n"
            "from adu_perception.export.camera_calibration import calibrate_camera\n"
            f"calibrate_camera({str(color_bundle)!r}, {str(camera_crops)!r})\n"
            "print('torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
