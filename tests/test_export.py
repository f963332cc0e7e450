"""Export stage: ONNX bundle vs PyTorch, the bundle contract, refusal of bad bundles, parity
gate, thresholds, the open-set memory bank, TensorRT engine naming/refusal, latency benchmark.
Real ONNX Runtime, tiny random CLIP (fixtures in conftest.py)."""
import json
import logging
import re
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from adu_perception.export import engine as engine_module
from adu_perception.export import onnx_export
from adu_perception.export.engine import EngineError, check_engine, engine_filename, engine_keys
from adu_perception.export.onnx_export import (OUTPUT_NAMES, ParityError, export_bundle, run_onnx,
                                              sha256_file)
from adu_perception.export.thresholds import choose_thresholds, items_for_rules, required_kept

# The keys docs/bundle.md lists for manifest.json, top level and nested.
MANIFEST_KEYS = {"format", "format_version", "model_file", "model_sha256", "opset", "input_name",
                 "output_names", "input_size", "embedding_dim", "preprocessing", "class_names",
                 "domain_names", "memorized_domains", "forgotten_domains", "open_set", "texture", "thresholds",
                 "parity", "source", "created_utc", "versions"}
THRESHOLD_KEYS = {"confidence", "forgotten_domain", "min_real_similarity", "rule",
                  "memorized_correct_kept", "forgotten_suppressed", "n_memorized", "n_forgotten"}
OPEN_SET_KEYS = {"score", "k", "bank_file", "bank_sha256", "n_bank", "bank_from"}
PARITY_KEYS = {"provider", "n_images", "max_abs_diff_probs", "top1_agreement"}


def manifest_of(bundle):
    return json.loads((bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def run_data(tiny_run):
    """The run's checkpoint, rebuilt PyTorch model (learned text prompts, not folded) and
    test split."""
    from adu_perception.training.checkpoint import load_checkpoint, model_from_checkpoint
    from adu_perception.training.pipeline import load_split

    payload = load_checkpoint(tiny_run)
    model, clip = model_from_checkpoint(payload)
    images, classes, domains, _ = load_split(payload, "test")
    return payload, model, clip, images, classes, domains


def test_the_exported_run_learned_text_prompts(run_data):
    payload, model, _, _, _, _ = run_data
    assert payload["prompt_config"]["text_tokens"] == 8 and model.text_encoder is not None
    assert "text_encoder.context" in payload["trainable_state"]


@pytest.fixture(scope="module")
def session(tiny_bundle):
    return ort.InferenceSession(str(tiny_bundle / "model.onnx"), providers=["CPUExecutionProvider"])


def test_onnx_matches_torch_on_the_runs_test_images(run_data, session):
    from adu_perception.training.evaluate import predict

    payload, model, _, images, _, _ = run_data
    ours = run_onnx(session, images, batch_size=8)
    reference = predict(model, images, payload["mean"], payload["std"])
    assert np.abs(ours["probs"] - reference["probs"]).max() <= 1e-4
    assert np.abs(ours["domain_probs"] - reference["domain_probs"]).max() <= 1e-4
    assert np.abs(ours["embeddings"] - reference["embeddings"]).max() <= 1e-4
    assert (ours["probs"].argmax(1) == reference["probs"].argmax(1)).all()
    # probs is the softmax of logits, embeddings are unit vectors
    logits = ours["logits"]
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    assert np.allclose(ours["probs"], softmax / softmax.sum(1, keepdims=True), atol=1e-6)
    assert np.allclose(np.linalg.norm(ours["embeddings"], axis=1), 1.0, atol=1e-5)


def test_dynamic_batch_gives_the_same_answers_at_1_and_5(run_data, session):
    images = run_data[3][:5]
    five = session.run(list(OUTPUT_NAMES), {"images": images})
    ones = [session.run(list(OUTPUT_NAMES), {"images": image[None]}) for image in images]
    for index, name in enumerate(OUTPUT_NAMES):
        assert five[index].shape[0] == 5
        stacked = np.concatenate([one[index] for one in ones])
        assert np.allclose(five[index], stacked, atol=1e-5), name


def test_manifest_follows_the_contract_and_matches_the_graph(tiny_bundle, tiny_run, run_data):
    payload = run_data[0]
    manifest = manifest_of(tiny_bundle)
    assert set(manifest) == MANIFEST_KEYS
    assert THRESHOLD_KEYS <= set(manifest["thresholds"])
    assert PARITY_KEYS <= set(manifest["parity"])
    assert manifest["format"] == "adu-bundle" and manifest["format_version"] == 3
    assert set(manifest["open_set"]) == OPEN_SET_KEYS
    assert manifest["model_sha256"] == sha256_file(tiny_bundle / manifest["model_file"])
    assert manifest["source"]["checkpoint_sha256"] == sha256_file(tiny_run / "checkpoint.pt")
    assert manifest["class_names"] == payload["class_names"]
    assert manifest["forgotten_domains"] == ["sketch"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["created_utc"])

    graph = onnx.load(str(tiny_bundle / "model.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == manifest["opset"] >= 17
    (graph_input,) = graph.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == manifest["input_name"]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [manifest["input_size"]] * 2 + [3]
    widths = {o.name: o.type.tensor_type.shape.dim[-1].dim_value for o in graph.graph.output}
    assert list(widths) == manifest["output_names"]
    assert widths["probs"] == widths["logits"] == len(manifest["class_names"])
    assert widths["domain_probs"] == len(manifest["domain_names"])
    assert widths["embeddings"] == manifest["embedding_dim"]


def test_graph_passes_full_onnx_check_and_holds_no_text_encoder(tiny_bundle, run_data):
    _, model, clip, _, _, _ = run_data
    graph = onnx.load(str(tiny_bundle / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    names = [t.name for t in graph.graph.initializer]
    assert not [n for n in names if "token_embedding" in n or "ln_final" in n or "text" in n]
    shapes = {tuple(t.dims) for t in graph.graph.initializer}
    assert tuple(clip.model.token_embedding.weight.shape) not in shapes
    stored = sum(int(np.prod(t.dims)) for t in graph.graph.initializer)
    text_tower = sum(p.numel() for n, p in clip.model.named_parameters() if not n.startswith("visual."))
    image_model = model.with_folded_text()  # text features as one constant [C, E]
    assert stored <= sum(t.numel() for t in image_model.state_dict().values()) + 6  # + mean, std
    assert stored < text_tower  # the tiny text tower alone outweighs the whole graph


def test_parity_failure_fails_loudly_and_writes_no_bundle(tiny_run, tmp_path, monkeypatch):
    real_run_onnx = onnx_export.run_onnx

    def disagreeing_run_onnx(*args, **kwargs):
        outputs = real_run_onnx(*args, **kwargs)
        outputs["probs"] = outputs["probs"][:, ::-1]  # as if the graph mixed up the classes
        return outputs

    monkeypatch.setattr(onnx_export, "run_onnx", disagreeing_run_onnx)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="top-1 agreement"):
        export_bundle(tiny_run, out, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone too


def test_probability_difference_over_tolerance_fails_parity_with_the_same_top1(tiny_run, tmp_path,
                                                                               monkeypatch):
    real_run_onnx = onnx_export.run_onnx

    def slightly_off_run_onnx(*args, **kwargs):
        outputs = real_run_onnx(*args, **kwargs)
        probs = outputs["probs"].copy()
        top = probs.argmax(1)
        probs[np.arange(len(probs)), top] += 1e-3  # over the 1e-4 tolerance, argmax unchanged
        outputs["probs"] = probs
        return outputs

    monkeypatch.setattr(onnx_export, "run_onnx", slightly_off_run_onnx)
    with pytest.raises(ParityError, match=r"max_abs_diff_probs = 0\.001 > 0\.0001") as error:
        export_bundle(tiny_run, tmp_path / "bundle", progress=False)
    assert "top-1" not in str(error.value)
    assert not (tmp_path / "bundle").exists()


def test_adu_export_exits_nonzero_with_one_line_on_a_parity_failure(tiny_run, tmp_path, monkeypatch,
                                                                     capsys):
    from adu_perception.cli import main

    real_run_onnx = onnx_export.run_onnx

    def disagreeing_run_onnx(*args, **kwargs):
        outputs = real_run_onnx(*args, **kwargs)
        outputs["domain_probs"] = outputs["domain_probs"][:, ::-1]
        return outputs

    monkeypatch.setattr(onnx_export, "run_onnx", disagreeing_run_onnx)
    status = main(["export", "--run", str(tiny_run), "--out", str(tmp_path / "bundle")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert status == 2
    assert len(errors) == 1 and errors[0].startswith("adu export: error: ONNX Runtime disagrees")
    assert "max_abs_diff_domain_probs" in errors[0] and "Traceback" not in errors[0]
    assert not (tmp_path / "bundle").exists()


def test_export_refuses_to_overwrite_without_force(tiny_run, tiny_bundle):
    with pytest.raises(onnx_export.ExportError, match="already exists"):
        export_bundle(tiny_run, tiny_bundle, progress=False)


def test_export_refuses_bad_options_before_loading_anything(tmp_path):
    # no run exists here: each option is checked before the checkpoint is read
    with pytest.raises(onnx_export.ExportError, match="parity_images 0 must be >= 1"):
        export_bundle(tmp_path / "no_run", tmp_path / "out", parity_images=0)
    with pytest.raises(onnx_export.ExportError, match="opset 12 is too old"):
        export_bundle(tmp_path / "no_run", tmp_path / "out", opset=12)


def test_export_leaves_the_attention_fast_path_setting_as_it_was(tiny_bundle):
    import torch

    assert torch.backends.mha.get_fastpath_enabled()  # disabled only while tracing


def memorized_forgotten_correct(manifest, outputs, classes, domains):
    names = manifest["domain_names"]
    memorized = np.isin(domains, [names.index(d) for d in manifest["memorized_domains"]])
    forgotten = np.isin(domains, [names.index(d) for d in manifest["forgotten_domains"]])
    return memorized, forgotten, memorized & (outputs["probs"].argmax(1) == classes)


def bank_similarity(bundle, outputs):
    """The open-set score of these graph outputs against the bundle's bank."""
    from adu_perception.runtime.open_set import real_similarity

    open_set = manifest_of(bundle)["open_set"]
    return real_similarity(outputs["embeddings"], np.load(bundle / open_set["bank_file"]),
                           open_set["k"])


def reported_by_manifest(bundle, outputs):
    from adu_perception.runtime.decision import decide

    manifest = manifest_of(bundle)
    thresholds = manifest["thresholds"]
    forgotten_mask = np.isin(manifest["domain_names"], manifest["forgotten_domains"])
    return decide(outputs["probs"], outputs["domain_probs"], forgotten_mask,
                  thresholds["confidence"], thresholds["forgotten_domain"],
                  bank_similarity(bundle, outputs), thresholds["min_real_similarity"]).reported


def test_thresholds_are_chosen_on_calibration_images_and_reported_on_test_images(
        tiny_bundle, run_data, session):
    from adu_perception.training.pipeline import load_split

    payload, _, _, images, classes, domains = run_data
    manifest = manifest_of(tiny_bundle)
    thresholds = manifest["thresholds"]
    # Calibration images are neither training shots nor test images.
    calibration_files = set(payload["calibration_files"])
    assert calibration_files and not calibration_files & set(payload["test_files"])
    assert not calibration_files & set(payload["train_files"])
    # The manifest's thresholds are the ones the calibration split chooses ...
    calibration_images, calibration_classes, calibration_domains, _ = load_split(payload, "calibration")
    calibration_out = run_onnx(session, calibration_images)
    names = manifest["domain_names"]
    chosen = choose_thresholds(calibration_out["probs"], calibration_out["domain_probs"],
                               calibration_classes, calibration_domains,
                               [names.index(d) for d in manifest["memorized_domains"]],
                               [names.index(d) for d in manifest["forgotten_domains"]],
                               real_similarity=bank_similarity(tiny_bundle, calibration_out))
    assert (thresholds["confidence"], thresholds["forgotten_domain"],
            thresholds["min_real_similarity"]) == (
        chosen["confidence"], chosen["forgotten_domain"], chosen["min_real_similarity"])
    assert thresholds["calibration"]["memorized_correct_kept"] == pytest.approx(chosen["memorized_correct_kept"])
    assert thresholds["calibration"]["n_memorized_correct_required"] == chosen["n_memorized_correct_required"]
    # ... and its rates are those of the test split under them.
    outputs = run_onnx(session, images)
    memorized, forgotten, correct = memorized_forgotten_correct(manifest, outputs, classes, domains)
    reported = reported_by_manifest(tiny_bundle, outputs)
    assert correct.any() and forgotten.any()
    assert reported[correct].mean() == pytest.approx(thresholds["memorized_correct_kept"])
    assert (~reported[forgotten]).mean() == pytest.approx(thresholds["forgotten_suppressed"])
    assert thresholds["n_memorized"] == memorized.sum() and thresholds["n_forgotten"] == forgotten.sum()
    assert "calibration" in thresholds["chosen_on"] and str(len(images)) in thresholds["chosen_on"]


def test_the_memory_bank_holds_the_graphs_embeddings_of_the_training_images(tiny_bundle, run_data,
                                                                            session):
    from adu_perception.training.pipeline import load_split

    payload = run_data[0]
    manifest = manifest_of(tiny_bundle)
    open_set = manifest["open_set"]
    bank = np.load(tiny_bundle / open_set["bank_file"])
    assert open_set["bank_sha256"] == sha256_file(tiny_bundle / open_set["bank_file"])
    assert (open_set["score"], open_set["k"]) == ("knn_cosine", 5)
    images, _, domains, _ = load_split(payload, "train")
    memorized = np.isin(domains, [manifest["domain_names"].index(d)
                                  for d in manifest["memorized_domains"]])
    assert memorized.any() and not memorized.all()  # the forgotten domain's shots stay out
    images = images[memorized]
    expected = np.concatenate([run_onnx(session, images)["embeddings"],
                               run_onnx(session, np.ascontiguousarray(images[:, :, ::-1]))["embeddings"]])
    assert bank.dtype == np.float16 and bank.shape == (2 * len(images), manifest["embedding_dim"])
    assert open_set["n_bank"] == len(bank)
    np.testing.assert_allclose(bank.astype(np.float32), expected, atol=2e-3)
    assert str(len(images)) in open_set["bank_from"] and "flipped" in open_set["bank_from"]
    # Threshold choice never sees the bank's images: calibration and training files are apart.
    assert not set(payload["calibration_files"]) & set(payload["train_files"])
    assert -1.0 <= manifest["thresholds"]["min_real_similarity"] <= 1.0
    assert manifest["thresholds"]["calibration"]["memorized_correct_kept"] >= 0.95


def test_export_with_open_set_off_writes_no_bank(tiny_run, tmp_path, capsys):
    from adu_perception.cli import main
    from adu_perception.runtime.bundle import load_bundle

    out = tmp_path / "bundle"
    assert main(["export", "--run", str(tiny_run), "--out", str(out), "--open-set", "off"]) == 0
    assert "open set: off" in capsys.readouterr().out
    manifest = manifest_of(out)
    assert manifest["format_version"] == 3 and manifest["open_set"] is None
    assert manifest["thresholds"]["min_real_similarity"] is None
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    bundle = load_bundle(out)
    assert bundle.open_set is None and "--open-set off" in bundle.notes


def test_export_refuses_a_run_without_calibration_images(tiny_run, tmp_path):
    from adu_perception.training.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(tiny_run)
    payload["calibration_files"] = []
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", payload)
    with pytest.raises(onnx_export.ExportError, match="no readable calibration images"):
        export_bundle(run, tmp_path / "bundle", progress=False)
    assert not (tmp_path / "bundle").exists()


def test_export_warns_when_calibration_is_too_small_for_a_second_rule(tiny_run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=onnx_export.log.name):
        bundle = export_bundle(tiny_run, tmp_path / "bundle", progress=False)
    calibration = json.loads((bundle / "manifest.json").read_text())["thresholds"]["calibration"]
    assert calibration["n_memorized_correct"] < items_for_rules(2, 0.95)
    assert any("only the forgotten-domain rule can be on" in r.getMessage() for r in caplog.records)


def crafted_two_rule_calibration(n_memorized: int):
    """n_memorized correct memorized predictions (confidence 0.9, p_forgotten 0.4) and 20
    forgotten-domain images: 10 that the domain head flags (p_forgotten 0.8) and 10 it misses
    (p_forgotten 0.3) whose class confidence is low (0.55). Only forgotten_domain in
    (0.4, 0.8] together with confidence in (0.55, 0.9] suppresses all forgotten while keeping
    every memorized."""
    probs = np.array([[0.9, 0.1]] * n_memorized + [[0.9, 0.1]] * 10 + [[0.55, 0.45]] * 10)
    domain_probs = np.array([[0.6, 0.4]] * n_memorized + [[0.2, 0.8]] * 10 + [[0.7, 0.3]] * 10)
    classes = np.zeros(n_memorized + 20, int)
    domains = np.array([0] * n_memorized + [1] * 20)
    return probs, domain_probs, classes, domains


def test_threshold_search_suppresses_what_it_can_and_keeps_what_it_must():
    probs, domain_probs, classes, domains = crafted_two_rule_calibration(40)
    result = choose_thresholds(probs, domain_probs, classes, domains, [0], [1])
    assert result["memorized_correct_kept"] == 1.0 and result["forgotten_suppressed"] == 1.0
    # forgotten_domain: the middle of the tied 0.41..0.80 (the widest margin to both groups);
    # confidence: the lowest that works (suppress no more than needed).
    assert (result["forgotten_domain"], result["confidence"]) == (0.61, 0.56)
    assert result["n_forgotten_suppressed"] == 20 and result["n_memorized_correct_kept"] == 40
    # Asking to keep more than is possible at any suppression level still keeps enough.
    assert choose_thresholds(probs, domain_probs, classes, domains, [0], [1], keep=1.0)[
        "memorized_correct_kept"] == 1.0


def test_a_second_rule_needs_enough_calibration_items_for_its_share():
    # Two rules on share the 5 % budget: each must keep ceil((n + 1) * 0.975) of n alone,
    # more than n below 39 items. With 38 the confidence rule stays off and only the domain
    # head's 10 flagged images are suppressed; with 39 both rules are on.
    few = choose_thresholds(*crafted_two_rule_calibration(38), [0], [1])
    assert few["confidence"] == 0.0 and few["n_forgotten_suppressed"] == 10
    enough = choose_thresholds(*crafted_two_rule_calibration(39), [0], [1])
    assert enough["confidence"] > 0.55 and enough["n_forgotten_suppressed"] == 20


def test_required_kept_is_the_conformal_count():
    assert required_kept(20, 0.95) == 20   # ceil(21 * 0.95) = ceil(19.95); ceil(20 * 0.95) is 19
    assert required_kept(100, 0.95) == 96  # ceil(95.95)
    assert required_kept(77, 0.95) == 75   # ceil(74.1)
    assert required_kept(10, 1.0) == 10 and required_kept(5, 0.0) == 0
    assert (items_for_rules(1, 0.95), items_for_rules(2, 0.95), items_for_rules(3, 0.95)) == (19, 39, 59)


def test_threshold_search_keeps_the_conformal_count_not_the_plain_share():
    # 20 correct memorized predictions, one of them (p_forgotten 0.7) looking as forgotten as
    # the 10 forgotten images (0.7); 10 more forgotten at 0.9. Suppressing 1 of 20 real items
    # would keep 95 % of this sample, but ceil(21 * 0.95) = 20 must stay: the threshold has to
    # spare the 0.7 real item, and then the 0.7 forgotten ones pass too.
    probs = np.array([[0.9, 0.1]] * 40)
    domain_probs = np.array([[0.7, 0.3]] * 19 + [[0.3, 0.7]] + [[0.3, 0.7]] * 10 + [[0.1, 0.9]] * 10)
    classes, domains = np.zeros(40, int), np.array([0] * 20 + [1] * 20)
    result = choose_thresholds(probs, domain_probs, classes, domains, [0], [1], keep=0.95)
    assert result["n_memorized_correct_required"] == 20
    assert result["n_memorized_correct_kept"] == 20
    assert result["n_forgotten_suppressed"] == 10 and 0.7 < result["forgotten_domain"] <= 0.9


# --- bundle validation on load (adu_perception.runtime.bundle) -------------------------

def copy_bundle(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "bundle")


def test_load_bundle_accepts_the_exported_bundle(tiny_bundle):
    from adu_perception.runtime.bundle import load_bundle

    load_bundle(tiny_bundle)


def test_load_bundle_refuses_edited_onnx_bytes(tiny_bundle, tmp_path):
    from adu_perception.runtime.bundle import BundleError, load_bundle

    bundle = copy_bundle(tiny_bundle, tmp_path)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_load_bundle_refuses_a_manifest_with_the_wrong_class_count(tiny_bundle, tmp_path):
    from adu_perception.runtime.bundle import BundleError, load_bundle

    bundle = copy_bundle(tiny_bundle, tmp_path)
    manifest = manifest_of(bundle)
    manifest["class_names"].append("unicorn")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="class"):
        load_bundle(bundle)


@pytest.mark.parametrize("missing", ["model.onnx", "manifest.json"])
def test_load_bundle_refuses_a_bundle_missing_a_file(tiny_bundle, tmp_path, missing):
    from adu_perception.runtime.bundle import BundleError, load_bundle

    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / missing).unlink()
    with pytest.raises(BundleError, match=re.escape(missing)):
        load_bundle(bundle)


# --- TensorRT engine ---------------------------------------------------------------------

def tensorrt_and_gpu():
    try:
        trt, _, _ = engine_module.import_tensorrt()
        return True, ""
    except EngineError as error:
        return False, str(error)


HAVE_TRT, NO_TRT_REASON = tensorrt_and_gpu()


def test_int8_calibration_images_are_read_before_tensorrt_is_needed(tiny_bundle, tmp_path):
    # with or without TensorRT, a bad --calib-dir is named first (not after minutes of parsing)
    with pytest.raises(EngineError, match="no images in calibration folder"):
        engine_module.build_engine(tiny_bundle, precision="int8", calib_dir=tmp_path / "none")


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the engine gets built")
def test_engine_command_without_tensorrt_or_gpu_exits_nonzero_with_a_clear_message(tiny_bundle, capsys):
    from adu_perception.cli import main

    before = sorted(tiny_bundle.iterdir())
    status = main(["engine", "--bundle", str(tiny_bundle)])
    error = capsys.readouterr().err
    assert status != 0
    assert error.startswith("adu engine: error:") and ("TensorRT" in error or "GPU" in error)
    assert sorted(tiny_bundle.iterdir()) == before  # nothing written


@pytest.mark.skipif(not HAVE_TRT, reason=f"needs TensorRT and a GPU: {NO_TRT_REASON}")
def test_engine_builds_and_is_reused(tiny_bundle):
    plan = engine_module.build_engine(tiny_bundle, precision="fp16", max_batch=8)
    assert plan.is_file() and engine_module.sidecar_path(plan).is_file()
    modified = plan.stat().st_mtime_ns
    assert engine_module.build_engine(tiny_bundle, precision="fp16", max_batch=8) == plan
    assert plan.stat().st_mtime_ns == modified  # reused, not rebuilt


SHA = "ab" * 32


def test_engine_filename_is_keyed_by_model_tensorrt_gpu_and_precision():
    name = engine_filename(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "fp16")
    assert name == "engine-abababababab-trt10.3.0-nvidia-h100-80gb-hbm3-sm90-fp16.plan"
    assert engine_filename(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "int8") != name
    with pytest.raises(ValueError, match="precision"):
        engine_filename(SHA, "10.3.0", "H100", (9, 0), "fp8")
    with pytest.raises(ValueError, match="sha256"):
        engine_filename("not-a-hash", "10.3.0", "H100", (9, 0), "fp16")


def write_fake_engine(folder, keys, **extra):
    plan = folder / engine_filename(keys["onnx_sha256"], keys["tensorrt_version"], keys["gpu_name"],
                                    keys["compute_capability"], keys["precision"])
    plan.write_bytes(b"not really an engine")
    engine_module.sidecar_path(plan).write_text(json.dumps({**keys, "min_batch": 1, "max_batch": 8, **extra}))
    return plan


def test_cached_engine_is_accepted_only_when_its_sidecar_matches(tmp_path):
    keys = engine_keys(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "fp16")
    plan = tmp_path / engine_filename(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "fp16")
    assert check_engine(plan, keys) is False  # nothing cached yet
    plan = write_fake_engine(tmp_path, keys)
    assert check_engine(plan, keys, (1, 8)) is True
    with pytest.raises(EngineError, match="batch 1..8"):
        check_engine(plan, keys, (1, 16))
    for key, other in (("onnx_sha256", "cd" * 32), ("tensorrt_version", "10.7.0"),
                       ("gpu_name", "NVIDIA A100-SXM4-40GB"), ("compute_capability", [8, 0])):
        with pytest.raises(EngineError, match=key):
            check_engine(plan, {**keys, key: other})
    engine_module.sidecar_path(plan).unlink()
    with pytest.raises(EngineError, match="no sidecar"):
        check_engine(plan, keys)


def test_engine_cache_reuses_a_match_and_refuses_a_mismatch_unless_forced(tmp_path):
    from adu_perception.export.engine import reuse_cached_engine

    keys = engine_keys(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "fp16")
    plan = tmp_path / engine_filename(SHA, "10.3.0", "NVIDIA H100 80GB HBM3", (9, 0), "fp16")
    assert reuse_cached_engine(plan, keys, (1, 8)) is False  # nothing cached: build
    write_fake_engine(tmp_path, keys)
    assert reuse_cached_engine(plan, keys, (1, 8)) is True
    assert reuse_cached_engine(plan, keys, (1, 8), force=True) is False
    # Same file name, but the sidecar says it was built by another TensorRT (e.g. copied).
    write_fake_engine(tmp_path, keys, tensorrt_version="10.0.1")
    with pytest.raises(EngineError, match="tensorrt_version.*--force"):
        reuse_cached_engine(plan, keys, (1, 8))
    assert plan.read_bytes() == b"not really an engine"  # left alone
    assert reuse_cached_engine(plan, keys, (1, 8), force=True) is False


# --- latency benchmark ---------------------------------------------------------------------

def test_latency_benchmark_times_both_graphs_and_gives_the_ratio(tiny_bundle):
    from adu_perception.export.latency import bundle_latency, format_table

    result = bundle_latency(tiny_bundle, providers=["CPUExecutionProvider"], batches=(1, 8),
                            warmup=1, repeats=3)
    assert [(r["provider"], r["batch"]) for r in result["rows"]] == [
        ("CPUExecutionProvider", 1), ("CPUExecutionProvider", 8)]
    for row in result["rows"]:
        assert row["a_median_ms"] > 0 and row["b_median_ms"] > 0
        assert row["a_p90_ms"] >= row["a_median_ms"]
        assert row["ratio"] == pytest.approx(row["a_median_ms"] / row["b_median_ms"])
    assert "ratio (a)/(b)" in format_table(result)
