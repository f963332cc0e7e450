"""runtime/bundle.py, decision.py, predictor.py: load and refuse bundles (and their open-set
memory bank), the decision rule on hand-made arrays, real ONNX Runtime inference, backend
selection and engine matching."""
import json
import sys

import numpy as np
import pytest

from adu_perception.runtime.bundle import BundleError, load_bundle, sha256_file
from adu_perception.runtime.decision import (FORGOTTEN_DOMAIN, INVALID_OUTPUT, LOW_CONFIDENCE, REPORTED,
                                             decide, describe)
from adu_perception.runtime.images import preprocess
from adu_perception.runtime.predictor import (AUTO_GPU_BACKENDS, ORT_PROVIDER, BackendError, Predictor,
                                              find_engine)
from ros_conftest_helpers import (color_bundle, copy_bundle, runtime_bundle,  # noqa: F401 (fixtures)
                                  solid, write_color_bundle)
from test_open_set import GREEN, RED, TEAL, write_open_set_bundle


@pytest.fixture(scope="module")
def open_set_bundle(color_bundle, tmp_path_factory):
    return write_open_set_bundle(color_bundle, tmp_path_factory.mktemp("open_set") / "bundle")


def edit_manifest(folder, **changes):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))
    return manifest


# -- loading ----------------------------------------------------------------------------------

def test_valid_bundle_loads_with_manifest_fields(runtime_bundle):
    bundle = load_bundle(runtime_bundle)
    manifest = json.loads((runtime_bundle / "manifest.json").read_text())
    assert bundle.class_names == tuple(manifest["class_names"])
    assert bundle.input_size == manifest["input_size"]
    assert bundle.confidence_threshold == manifest["thresholds"]["confidence"]
    assert bundle.forgotten_mask.tolist() == [d in manifest["forgotten_domains"]
                                              for d in manifest["domain_names"]]


def test_missing_folder_file_and_manifest_are_refused(tmp_path, runtime_bundle):
    with pytest.raises(BundleError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="empty path"):
        load_bundle("")
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(runtime_bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest missing"):
        load_bundle(tmp_path)
    broken = copy_bundle(runtime_bundle, tmp_path / "no_model")
    (broken / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model file missing: .*model\.onnx"):
        load_bundle(broken)


def test_unparsable_manifest_and_missing_keys_are_refused(tmp_path, runtime_bundle):
    bad_json = copy_bundle(runtime_bundle, tmp_path / "bad_json")
    (bad_json / "manifest.json").write_text('{"format": "adu-bundle",')
    with pytest.raises(BundleError, match=r"cannot parse .*manifest\.json"):
        load_bundle(bad_json)
    missing = copy_bundle(runtime_bundle, tmp_path / "missing")
    edit_manifest(missing, class_names=None, thresholds=None)
    with pytest.raises(BundleError, match="lacks required keys: class_names, thresholds"):
        load_bundle(missing)
    version = copy_bundle(runtime_bundle, tmp_path / "version")
    edit_manifest(version, format_version=99)
    with pytest.raises(BundleError, match="format_version 99"):
        load_bundle(version)


def test_edited_onnx_fails_the_sha256_check(tmp_path, runtime_bundle):
    edited = copy_bundle(runtime_bundle, tmp_path / "edited")
    with open(edited / "model.onnx", "ab") as file:
        file.write(b"\0")
    with pytest.raises(BundleError, match=r"sha256 mismatch: .*model\.onnx"):
        load_bundle(edited)


@pytest.mark.parametrize("change, problem", [
    (lambda m: {"class_names": m["class_names"] + ["extra"]}, r"output probs has shape .* class"),
    (lambda m: {"domain_names": m["domain_names"] + ["extra"]}, r"output domain_probs .* domain"),
    (lambda m: {"input_size": m["input_size"] + 8}, "disagrees with manifest input_size"),
    (lambda m: {"embedding_dim": m["embedding_dim"] + 1}, r"output embeddings .* embedding"),
    (lambda m: {"forgotten_domains": ["no_such_domain"]}, "not in domain_names"),
    (lambda m: {"input_name": "pixels"}, "graph inputs are"),
    (lambda m: {"thresholds": {**m["thresholds"], "confidence": 1.5}}, "thresholds.confidence"),
    # wrong types and contradictions, each named (not a TypeError deep inside the loader)
    (lambda m: {"thresholds": {**m["thresholds"], "forgotten_domain": True}}, "thresholds.forgotten_domain"),
    (lambda m: {"class_names": [{"a": 1}] * len(m["class_names"])}, "class_names must be a non-empty list"),
    (lambda m: {"class_names": list(range(len(m["class_names"])))}, r"class_names .* \(strings\)"),
    (lambda m: {"forgotten_domains": "cartoon"}, "forgotten_domains must be a non-empty list"),
    (lambda m: {"forgotten_domains": []}, "forgotten_domains must be a non-empty list"),
    (lambda m: {"forgotten_domains": m["forgotten_domains"] + m["memorized_domains"]},
     "both memorized and forgotten"),
    (lambda m: {"preprocessing": "RGB"}, "preprocessing must be an object"),
    (lambda m: {"preprocessing": {**m["preprocessing"], "color": "BGR"}}, "preprocessing.color is 'BGR'"),
    (lambda m: {"preprocessing": {**m["preprocessing"], "layout": "NCHW"}}, "preprocessing.layout"),
    (lambda m: {"input_size": True}, "input_size must be a positive integer"),
    (lambda m: {"format_version": True}, "format_version True is not supported"),
    (lambda m: {"output_names": "probs"}, "output_names"),
    (lambda m: {"output_names": ["probs", 1, "domain_probs", "embeddings"]}, "output_names"),
])
def test_manifest_disagreeing_with_the_graph_is_refused(tmp_path, runtime_bundle, change, problem):
    folder = copy_bundle(runtime_bundle, tmp_path / "mismatch")
    manifest = json.loads((folder / "manifest.json").read_text())
    edit_manifest(folder, **change(manifest))
    with pytest.raises(BundleError, match=problem):
        load_bundle(folder)


def test_without_the_onnx_package_the_graph_is_read_with_onnxruntime(tmp_path, runtime_bundle,
                                                                       monkeypatch):
    from adu_perception.runtime.bundle import _graph_io_onnxruntime, graph_io

    model = runtime_bundle / "model.onnx"
    assert _graph_io_onnxruntime(model) == graph_io(model)
    monkeypatch.setitem(sys.modules, "onnx", None)  # an edge image without onnx
    assert load_bundle(runtime_bundle).input_size > 0
    folder = copy_bundle(runtime_bundle, tmp_path / "mismatch")
    manifest = json.loads((folder / "manifest.json").read_text())
    edit_manifest(folder, class_names=manifest["class_names"] + ["extra"])
    with pytest.raises(BundleError, match="output probs has shape"):
        load_bundle(folder)


def graph_bundle(tmp_path, source, name, batch="batch", out_type=None, nan=None):
    """A copy of `source` whose model.onnx is a small graph with the same I/O names and widths:
    constant outputs of out_type for a batch dimension `batch`; nan="always" makes them NaN,
    nan="white" only for an all-white image (log(0) * 0), so the warm-up (black) passes."""
    import onnx
    from onnx import TensorProto, helper

    manifest = json.loads((source / "manifest.json").read_text())
    size, out_type = manifest["input_size"], out_type or TensorProto.FLOAT
    widths = {"probs": len(manifest["class_names"]), "logits": len(manifest["class_names"]),
              "domain_probs": len(manifest["domain_names"]), "embeddings": manifest["embedding_dim"]}
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),  # [N]
             helper.make_node("Unsqueeze", ["m", "one_axis"], ["m1"]),                 # [N, 1]
             helper.make_node("Sub", ["white", "m1"], ["headroom"]),
             helper.make_node("Log", ["headroom"], ["log_headroom"]),                  # -inf if white
             helper.make_node("Mul", ["log_headroom" if nan == "white" else "m1", "zero"], ["z"])]
    initializers = [helper.make_tensor("one_axis", TensorProto.INT64, [1], [1]),
                    helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                    helper.make_tensor("white", TensorProto.FLOAT, [], [255.0])]
    outputs = []
    for output, width in widths.items():
        value = np.full((1, width), np.nan if nan == "always" else 1.0 / width, np.float32)
        initializers.append(helper.make_tensor(f"{output}_c", TensorProto.FLOAT, value.shape, value.ravel()))
        nodes += [helper.make_node("Add", ["z", f"{output}_c"], [f"{output}_f"]),   # [N, width]
                  helper.make_node("Cast", [f"{output}_f"], [output], to=out_type)]
        outputs.append(helper.make_tensor_value_info(output, out_type, [batch, width]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "images", TensorProto.UINT8, [batch, size, size, 3])], outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    folder = copy_bundle(source, tmp_path / name)
    onnx.save(model, folder / "model.onnx")
    edit_manifest(folder, model_sha256=sha256_file(folder / "model.onnx"))
    return folder


def test_graph_problems_are_refused_at_load(tmp_path, runtime_bundle):
    from onnx import TensorProto

    assert Predictor(graph_bundle(tmp_path, runtime_bundle, "ok")).classify_crops([solid((1, 2, 3))])
    with pytest.raises(BundleError, match="batch dimension is fixed at 1"):
        load_bundle(graph_bundle(tmp_path, runtime_bundle, "batch1", batch=1))
    with pytest.raises(BundleError, match="output probs is int64, not float"):
        load_bundle(graph_bundle(tmp_path, runtime_bundle, "int64", out_type=TensorProto.INT64))
    empty = copy_bundle(runtime_bundle, tmp_path / "empty")
    (empty / "model.onnx").write_bytes(b"")
    edit_manifest(empty, model_sha256=sha256_file(empty / "model.onnx"))
    with pytest.raises(BundleError, match="holds no ONNX graph"):
        load_bundle(empty)


def test_non_finite_outputs_are_suppressed_never_reported(tmp_path, runtime_bundle):
    # every comparison of the rule is false for NaN: without rule 0 such an item would be reported
    with pytest.raises(BackendError, match="output probs holds NaN or inf for a black image"):
        Predictor(graph_bundle(tmp_path, runtime_bundle, "nan", nan="always"))  # refused at load
    predictor = Predictor(graph_bundle(tmp_path, runtime_bundle, "nan_white", nan="white"))
    fine, broken = predictor.classify_crops([solid((0, 0, 0)), solid((255, 255, 255))])
    assert fine.reason != "invalid_output" and fine.top_k
    assert (broken.reason, broken.reported, broken.label, broken.top_k) == ("invalid_output", False, None, [])
    json.dumps([fine.to_dict(), broken.to_dict()], allow_nan=False)  # valid JSON for the node


def test_classify_refuses_bad_thresholds_crops_and_regions(runtime_bundle):
    predictor = Predictor(runtime_bundle)
    crop = solid((200, 30, 30))
    assert predictor.classify_crops([]) == []
    for kwargs in ({"confidence": 5}, {"confidence": float("nan")}, {"forgotten_domain": -1},
                   {"forgotten_domain": "0.5"}, {"confidence": True}):
        with pytest.raises(ValueError, match="threshold must be a number in"):
            predictor.classify_crops([crop], **kwargs)
    for bad, what in ((None, "NoneType"), (crop[..., 0], r"uint8 \(48, 64\)"),
                      (crop.astype(np.float32), "float32")):
        with pytest.raises(ValueError, match=f"crop 1 must be a uint8 RGB image .*{what}"):
            predictor.classify_crops([crop, bad])
    with pytest.raises(ValueError, match="1 regions given for 2 images"):
        predictor.classify_crops([crop, crop], regions=[(0, 0, 4, 4)])
    with pytest.raises(BackendError, match="unknown engine precision 'fp8'"):
        Predictor(runtime_bundle, precision="fp8")


# -- decision rule ----------------------------------------------------------------------------

DOMAINS = ["photo", "cartoon", "sketch"]
FORGOTTEN = np.array([False, True, True])


def test_decision_rule_on_hand_made_arrays():
    probs = np.array([[0.7, 0.2, 0.1],    # confident, photo            -> reported, class 0
                      [0.1, 0.8, 0.1],    # confident but cartoon+sketch = 0.65 -> forgotten
                      [0.4, 0.35, 0.25],  # photo, max 0.4 < 0.5        -> low confidence
                      [0.5, 0.3, 0.2],    # max == confidence: not below -> reported
                      [0.2, 0.2, 0.6],    # forgotten sum == threshold  -> forgotten (>=)
                      [0.2, 0.2, 0.6]])   # forgotten sum just below    -> reported
    # Boundary rows use binary-exact values: 0.5 + 0.125 is exactly 0.625 in floating point.
    domains = np.array([[0.9, 0.05, 0.05],
                        [0.35, 0.15, 0.5],
                        [0.8, 0.1, 0.1],
                        [0.9, 0.1, 0.0],
                        [0.375, 0.5, 0.125],
                        [0.375 + 2 ** -20, 0.5, 0.125 - 2 ** -20]])
    assert domains[4, 1] + domains[4, 2] == 0.625 and domains[5, 1] + domains[5, 2] < 0.625
    result = decide(probs, domains, FORGOTTEN, confidence=0.5, forgotten_domain=0.625)
    assert result.reason.tolist() == [REPORTED, FORGOTTEN_DOMAIN, LOW_CONFIDENCE, REPORTED,
                                      FORGOTTEN_DOMAIN, REPORTED]
    assert result.reported.tolist() == [True, False, False, True, False, True]
    assert result.label.tolist() == [0, 1, 0, 0, 2, 2]
    np.testing.assert_allclose(result.score, [0.7, 0.8, 0.4, 0.5, 0.6, 0.6])
    np.testing.assert_allclose(result.p_forgotten, [0.1, 0.65, 0.2, 0.1, 0.625, 0.625 - 2 ** -20])
    # Suppressed for a forgotten domain: the most likely *forgotten* domain is reported, even
    # where a memorized domain has the single highest probability (row 1: sketch; row 4: cartoon).
    assert result.domain.tolist()[:5] == [0, 2, 0, 0, 1]


def test_rule_zero_suppresses_items_with_non_finite_outputs():
    probs = np.array([[0.7, 0.2, 0.1], [np.nan, 0.2, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    domain_probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [np.inf, 0, 0], [0.9, 0.05, 0.05]])
    similarity = np.array([0.9, 0.9, 0.9, np.nan])
    result = decide(probs, domain_probs, FORGOTTEN, 0.5, 0.5, similarity, 0.5)
    assert result.reason.tolist() == [REPORTED, INVALID_OUTPUT, INVALID_OUTPUT, INVALID_OUTPUT]
    assert np.isfinite(result.score).all() and np.isfinite(result.p_forgotten).all()
    # without the open-set rule on, its score is not an output the rule reads
    assert decide(probs[3:], domain_probs[3:], FORGOTTEN, 0.5, 0.5, similarity[3:]).reason.tolist() == [REPORTED]


def test_rule_one_needs_a_forgotten_domain_and_shapes_are_checked():
    probs, domains = np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])
    result = decide(probs, domains, np.array([False, False]), confidence=0.5, forgotten_domain=0.0)
    assert result.reported.tolist() == [True]
    with pytest.raises(ValueError, match="forgotten_mask"):
        decide(probs, domains, FORGOTTEN, 0.5, 0.5)
    with pytest.raises(ValueError, match="same N"):
        decide(probs, np.ones((2, 2)) / 2, np.array([False, True]), 0.5, 0.5)


def test_describe_gives_top_k_and_json_ready_items():
    probs = np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    domains = np.array([[1.0, 0.0, 0.0], [0.0, 0.1, 0.9]])
    result = decide(probs, domains, FORGOTTEN, 0.5, 0.5)
    items = describe(probs, domains, result, ["car", "bus", "sign"], DOMAINS, top_k=2,
                     regions=[(0, 0, 10, 10), (10, 0, 10, 10)])
    first, second = (item.to_dict() for item in items)
    assert first["label"] == "bus" and not first["suppressed"] and first["reason"] == "reported"
    assert [t["label"] for t in first["top_k"]] == ["bus", "sign"]
    assert first["region"] == [0, 0, 10, 10]
    assert second["label"] is None and second["suppressed"] and second["domain"] == "sketch"
    assert second["top_k"][0] == {"label": "sign", "score": 0.6}
    json.dumps(first)  # plain JSON types only


# -- predictor --------------------------------------------------------------------------------

def test_predictor_runs_the_graph_with_the_best_provider_here(runtime_bundle):
    import onnxruntime as ort

    predictor = Predictor(runtime_bundle, backend="auto")
    bundle = predictor.bundle
    # auto takes the first GPU provider this machine's ONNX Runtime has, else the CPU (no engine)
    available = ort.get_available_providers()
    assert predictor.backend == next((name for name in AUTO_GPU_BACKENDS if ORT_PROVIDER[name] in available),
                                     "onnxruntime-cpu")
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, bundle.input_size, bundle.input_size, 3), dtype=np.uint8)
    out = predictor.predict(batch)
    assert out["probs"].shape == (3, len(bundle.class_names))
    assert out["domain_probs"].shape == (3, len(bundle.domain_names))
    assert out["embeddings"].shape == (3, bundle.embedding_dim)
    np.testing.assert_allclose(out["probs"].sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["embeddings"], axis=1), 1, atol=1e-4)
    single = predictor.predict(batch[1:2])  # batch-independent
    np.testing.assert_allclose(single["probs"], out["probs"][1:2], atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(batch.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(batch[:, :8])


def test_colour_bundle_decisions_end_to_end(color_bundle):
    predictor = Predictor(color_bundle, backend="onnxruntime-cpu")
    batch = preprocess([solid((20, 200, 30)), solid((210, 20, 20)), solid((128, 128, 128))], 32)
    real, illustration, unsure = predictor.classify(batch)
    assert (real.reported, real.label, real.domain) == (True, "car", "photo")
    assert (illustration.reason, illustration.domain) == ("forgotten_domain", "cartoon")
    assert unsure.reason == "low_confidence"
    # Thresholds passed in override the bundle's: nothing is confident enough at 1.0.
    assert not predictor.classify(batch[:1], confidence=1.0)[0].reported


def test_unavailable_backends_are_refused_clearly(runtime_bundle):
    import onnxruntime

    with pytest.raises(BackendError, match="unknown backend 'gpu'"):
        Predictor(runtime_bundle, backend="gpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="CUDAExecutionProvider"):
            Predictor(runtime_bundle, backend="onnxruntime-cuda")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="needs the `tensorrt` Python package"):
            Predictor(runtime_bundle, backend="tensorrt")


def test_auto_ignores_an_engine_it_cannot_use(tmp_path, color_bundle):
    folder = copy_bundle(color_bundle, tmp_path / "with_engine")
    sha = load_bundle(folder).model_sha256
    (folder / f"engine-{sha[:12]}-trt10.9.0-nvidia-h100-sm90-fp16.plan").write_bytes(b"not a plan")
    assert Predictor(folder, backend="auto").backend.startswith("onnxruntime")


def test_engine_lookup_matches_model_tensorrt_and_gpu(tmp_path, color_bundle):
    folder = copy_bundle(color_bundle, tmp_path / "engines")
    bundle = load_bundle(folder)
    sha = bundle.model_sha256
    name = f"engine-{sha[:12]}-trt10.9.0-nvidia-h100-80gb-hbm3-sm90-fp16.plan"
    # Built for another GPU: refused, naming what is there and how to build the right one.
    (folder / name).write_bytes(b"plan")
    with pytest.raises(BackendError, match=r"built for another model, TensorRT or GPU.*adu engine"):
        find_engine(bundle, "10.9.0", "NVIDIA L4", (8, 9))
    # The right name but no sidecar: cannot tell what it is, refused.
    with pytest.raises(BackendError, match="no sidecar"):
        find_engine(bundle, "10.9.0", "NVIDIA H100 80GB HBM3", (9, 0))
    sidecar = {"onnx_sha256": sha, "tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H100 80GB HBM3",
               "compute_capability": [9, 0], "precision": "fp16"}
    (folder / name.replace(".plan", ".json")).write_text(json.dumps(sidecar))
    assert find_engine(bundle, "10.9.0", "NVIDIA H100 80GB HBM3", (9, 0)).name == name
    # A sidecar recording another model is refused even under the right name.
    (folder / name.replace(".plan", ".json")).write_text(json.dumps({**sidecar, "onnx_sha256": "0" * 64}))
    with pytest.raises(BackendError, match="onnx_sha256"):
        find_engine(bundle, "10.9.0", "NVIDIA H100 80GB HBM3", (9, 0))


def test_bundle_written_for_another_input_size_still_validates(tmp_path):
    bundle = load_bundle(write_color_bundle(tmp_path / "b48", input_size=48))
    assert bundle.input_size == 48
    assert Predictor(bundle).predict(np.zeros((1, 48, 48, 3), np.uint8))["probs"].shape == (1, 3)


# -- open-set memory bank (format 2) ------------------------------------------------------------

def test_open_set_bundle_loads_its_bank(open_set_bundle):
    bundle = load_bundle(open_set_bundle)
    assert bundle.open_set is not None and bundle.notes == ""
    assert (bundle.open_set.score, bundle.open_set.k, bundle.open_set.n_bank) == ("knn_cosine", 2, 4)
    assert bundle.open_set.bank.shape == (4, bundle.embedding_dim)
    assert bundle.min_real_similarity_threshold == 0.99


def test_unfamiliar_items_are_suppressed_end_to_end(open_set_bundle, color_bundle):
    predictor = Predictor(open_set_bundle, backend="onnxruntime-cpu")
    batch = preprocess([solid(GREEN), solid(TEAL), solid(RED)], 32)
    green, teal, red = predictor.classify(batch)
    assert (green.reported, green.label) == (True, "car") and green.real_similarity > 0.99
    assert (teal.reported, teal.reason) == (False, "unfamiliar") and teal.real_similarity < 0.99
    assert red.reason == "forgotten_domain" and red.real_similarity is not None
    # The old rule alone reports the teal car: the open-set rule is what suppresses it.
    old = Predictor(color_bundle, backend="onnxruntime-cpu").classify(batch)
    assert (old[1].reported, old[1].label, old[1].real_similarity) == (True, "car", None)
    # A threshold passed in overrides the bundle's, like the others.
    assert predictor.classify(batch[1:2], min_real_similarity=-1.0)[0].reported
    with pytest.raises(ValueError, match="no open-set memory bank"):
        Predictor(color_bundle).classify(batch[:1], min_real_similarity=0.5)


def save_bank(folder, bank, update_sha=True):
    np.save(folder / "memory_bank.npy", bank)
    manifest = json.loads((folder / "manifest.json").read_text())
    if update_sha:
        manifest["open_set"]["bank_sha256"] = sha256_file(folder / "memory_bank.npy")
    (folder / "manifest.json").write_text(json.dumps(manifest))


def damage(folder, what):
    """Break one thing of an open-set bundle (the sha256 kept right unless that is the point)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    bank = np.load(folder / "memory_bank.npy")
    if what == "sha":
        save_bank(folder, bank[::-1], update_sha=False)
    elif what == "missing":
        (folder / "memory_bank.npy").unlink()
    elif what == "shape":
        save_bank(folder, bank[:, :-1])
    elif what == "rows":
        save_bank(folder, bank[:3])
    elif what == "nan":
        bank[1, 2] = np.nan
        save_bank(folder, bank)
    elif what == "not_npy":
        (folder / "memory_bank.npy").write_bytes(b"not a numpy file")
        edit_manifest(folder, open_set={**manifest["open_set"],
                                        "bank_sha256": sha256_file(folder / "memory_bank.npy")})
    elif what == "k":
        edit_manifest(folder, open_set={**manifest["open_set"], "k": 0})
    elif what == "score":
        edit_manifest(folder, open_set={**manifest["open_set"], "score": "mahalanobis"})
    elif what == "threshold":
        edit_manifest(folder, thresholds={**manifest["thresholds"], "min_real_similarity": 1.5})
    elif what == "no_threshold":
        thresholds = dict(manifest["thresholds"])
        del thresholds["min_real_similarity"]
        edit_manifest(folder, thresholds=thresholds)
    elif what == "threshold_without_bank":
        edit_manifest(folder, open_set=None)
    elif what == "version":
        edit_manifest(folder, format_version=4)


@pytest.mark.parametrize("what, problem", [
    ("sha", r"sha256 mismatch: .*memory_bank\.npy.*memory bank edited"),
    ("missing", r"memory bank missing: .*memory_bank\.npy"),
    ("shape", r"memory bank .* has shape \(4, 7\).*\[4, 8\]"),
    ("rows", r"memory bank .* has shape \(3, 8\).*\[4, 8\] \(open_set.n_bank"),
    ("nan", r"memory bank .* holds non-finite values"),
    ("not_npy", r"cannot read memory bank"),
    ("k", r"open_set.k must be an integer >= 1, got 0"),
    ("score", r"open_set.score 'mahalanobis' is unknown"),
    ("threshold", r"thresholds.min_real_similarity must be a number in \[-1, 1\].*1.5"),
    ("no_threshold", r"thresholds.min_real_similarity must be a number .* got None"),
    ("threshold_without_bank", r"min_real_similarity is set but there is no open_set"),
    ("version", r"format_version 4 is not supported by this runtime \(it reads 1, 2, 3"),
])
def test_a_bad_memory_bank_or_open_set_section_is_refused(tmp_path, open_set_bundle, what, problem):
    folder = copy_bundle(open_set_bundle, tmp_path / what)
    damage(folder, what)
    with pytest.raises(BundleError, match=problem):
        load_bundle(folder)


def test_a_format_1_bundle_loads_with_the_open_set_rule_off(tmp_path, runtime_bundle):
    folder = copy_bundle(runtime_bundle, tmp_path / "format1")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 1
    manifest.pop("open_set", None)
    manifest["thresholds"].pop("min_real_similarity", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "memory_bank.npy").unlink(missing_ok=True)
    bundle = load_bundle(folder)
    assert bundle.open_set is None and bundle.min_real_similarity_threshold is None
    assert "format_version 1" in bundle.notes and "'unfamiliar' rule is off" in bundle.notes
    size = bundle.input_size
    (decision,) = Predictor(bundle).classify(np.zeros((1, size, size, 3), np.uint8))
    assert decision.real_similarity is None and decision.reason != "unfamiliar"
