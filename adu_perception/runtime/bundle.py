"""Load and validate a model bundle (docs/bundle.md): model.onnx + manifest.json.

Everything a consumer relies on is checked once here, so the node and `adu replay` can
trust a `Bundle`: the manifest parses and has every key, model.onnx is the file the export
wrote (sha256), and the graph's input/outputs agree with the manifest (names, dtype, input
size, class/domain/embedding counts). Format 2 adds an optional open-set memory bank
(memory_bank.npy, checked against the manifest: sha256, shape, finite values); format 3 an
optional texture head (texture_head.npz, runtime.texture). Reads the graph with onnx (or
ONNX Runtime); no torch.
"""
import hashlib
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .decision import is_threshold
from .open_set import SCORES, OpenSet
from .texture import SCORES as TEXTURE_SCORES, TextureHead

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "adu-bundle"
# 2: optional open_set + thresholds.min_real_similarity; 3: optional texture head
SUPPORTED_FORMAT_VERSIONS = (1, 2, 3)
OUTPUT_NAMES = ("probs", "logits", "domain_probs", "embeddings")
REQUIRED_KEYS = ("format", "format_version", "model_file", "model_sha256", "input_name",
                 "output_names", "input_size", "embedding_dim", "preprocessing", "class_names",
                 "domain_names", "memorized_domains", "forgotten_domains", "thresholds")
REQUIRED_THRESHOLDS = ("confidence", "forgotten_domain")
# What this runtime feeds the graph (runtime.images): a manifest asking for anything else is
# for another consumer. Keys a manifest leaves out are not checked.
RUNTIME_PREPROCESSING = {"color": "RGB", "dtype": "uint8", "layout": "NHWC",
                         "resize": "shorter_side", "crop": "center", "normalization": "in_graph"}


class BundleError(ValueError):
    """The bundle folder cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Bundle:
    path: Path                     # the bundle folder
    model_path: Path               # its model.onnx
    model_sha256: str
    input_name: str
    output_names: Tuple[str, ...]
    input_size: int
    embedding_dim: int
    class_names: Tuple[str, ...]
    domain_names: Tuple[str, ...]
    memorized_domains: Tuple[str, ...]
    forgotten_domains: Tuple[str, ...]
    confidence_threshold: float
    forgotten_domain_threshold: float
    preprocessing: dict
    manifest: dict = field(repr=False)  # the whole manifest, for anything not lifted above
    open_set: Optional[OpenSet] = None  # None: the "unfamiliar" rule is off
    min_real_similarity_threshold: Optional[float] = None  # set exactly when open_set is
    notes: str = ""  # one line for the log when the bundle lacks a feature (e.g. format 1)
    texture: Optional[TextureHead] = None  # None: rule 1 reads the domain head only

    @property
    def forgotten_mask(self) -> np.ndarray:
        """bool [D]: which domain_probs columns are forgotten domains."""
        return np.array([name in self.forgotten_domains for name in self.domain_names], bool)


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checked_sha256(path: Path, expected, manifest_path: Path, what: str) -> str:
    """The file's sha256, refused unless it is the one the manifest recorded at export."""
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(f"sha256 mismatch: {path} hashes to {actual[:12]}..., "
                          f"{manifest_path} expects {str(expected)[:12]}... "
                          f"({what} edited or replaced after export)")
    return actual


def load_bundle(path) -> Bundle:
    """Read and validate the bundle folder at `path`; raises BundleError."""
    if path is None or not str(path).strip():
        raise BundleError("no bundle given (empty path)")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise BundleError(f"bundle folder not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"bundle path is not a folder: {folder} (give the folder holding "
                          f"{MANIFEST_FILE} and model.onnx)")
    manifest_path = folder / MANIFEST_FILE
    manifest = _read_manifest(manifest_path)
    model_path = folder / str(manifest["model_file"])
    if not model_path.is_file():
        raise BundleError(f"model file missing: {model_path} (named by {manifest_path})")
    actual = _checked_sha256(model_path, manifest["model_sha256"], manifest_path, "model")
    thresholds = manifest["thresholds"]
    bundle = Bundle(
        path=folder, model_path=model_path, model_sha256=actual,
        input_name=str(manifest["input_name"]), output_names=tuple(manifest["output_names"]),
        input_size=int(manifest["input_size"]), embedding_dim=int(manifest["embedding_dim"]),
        class_names=tuple(manifest["class_names"]), domain_names=tuple(manifest["domain_names"]),
        memorized_domains=tuple(manifest["memorized_domains"]),
        forgotten_domains=tuple(manifest["forgotten_domains"]),
        confidence_threshold=float(thresholds["confidence"]),
        forgotten_domain_threshold=float(thresholds["forgotten_domain"]),
        preprocessing=dict(manifest["preprocessing"]), manifest=manifest)
    _check_graph(bundle)
    # After the graph: the bank's width is checked against an embedding_dim the graph confirmed.
    bundle = replace(bundle, **_open_set(folder, manifest_path, manifest))
    return replace(bundle, texture=_texture(folder, manifest_path, manifest))


def _texture(folder: Path, manifest_path: Path, manifest: dict) -> Optional[TextureHead]:
    """The texture head loaded and checked, or None when the manifest has none."""
    section = manifest.get("texture")
    if section is None:
        return None
    where = f"{manifest_path}: texture"
    if manifest["format_version"] < 3:
        raise BundleError(f"{where} needs format_version 3, the manifest says "
                          f"{manifest['format_version']}")
    _check_section(section, where, ("score", "file", "sha256", "zoom", "tile"), TEXTURE_SCORES)
    for key in ("zoom", "tile"):
        _check_count(section[key], f"{where}.{key}")
    if section["tile"] != manifest["input_size"]:
        raise BundleError(f"{where}.tile {section['tile']} differs from input_size "
                          f"{manifest['input_size']} (tiles are the model's input size)")
    path = _side_file(folder, section["file"], f"{where}.file", "texture head")
    _checked_sha256(path, section["sha256"], manifest_path, "texture head")
    try:
        return TextureHead.load(path, section["zoom"], section["tile"], str(section.get("fitted_on", "")))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise BundleError(f"cannot use texture head {path}: {error}") from None


def _check_section(section, where: str, keys, scores) -> None:
    """An optional manifest section: an object with every key and a score this runtime knows."""
    if not isinstance(section, dict):
        raise BundleError(f"{where} must be an object or null")
    missing = [key for key in keys if key not in section]
    if missing:
        raise BundleError(f"{where} lacks {', '.join(missing)}")
    if section["score"] not in scores:
        raise BundleError(f"{where}.score {section['score']!r} is unknown to this runtime "
                          f"(knows {', '.join(scores)})")


def _check_count(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BundleError(f"{where} must be an integer >= 1, got {value!r}")


def _side_file(folder: Path, name, where: str, what: str) -> Path:
    """A file the manifest names beside it (a bare name, no path), which must exist."""
    name = str(name)
    path = folder / name
    if Path(name).name != name or not path.is_file():
        raise BundleError(f"{what} missing: {path} (named by {where})")
    return path


def _open_set(folder: Path, manifest_path: Path, manifest: dict) -> dict:
    """The Bundle fields of the open-set rule: the bank loaded and checked, or a note why off."""
    section = manifest.get("open_set")
    threshold = manifest["thresholds"].get("min_real_similarity")
    if manifest["format_version"] == 1:
        return {"notes": "bundle format_version 1 has no open-set memory bank: the "
                         "'unfamiliar' rule is off (re-export with this version to enable it)"}
    if section is None:
        if threshold is not None:
            raise BundleError(f"{manifest_path}: thresholds.min_real_similarity is set but there "
                              f"is no open_set section (no memory bank to compare with)")
        return {"notes": "bundle exported without an open-set memory bank (--open-set off): "
                         "the 'unfamiliar' rule is off"}
    where = f"{manifest_path}: open_set"
    _check_section(section, where, ("score", "k", "bank_file", "bank_sha256", "n_bank"), SCORES)
    k, n_bank = section["k"], section["n_bank"]
    _check_count(k, f"{where}.k")
    _check_count(n_bank, f"{where}.n_bank")
    if not is_threshold(threshold, low=-1.0):
        raise BundleError(f"{manifest_path}: thresholds.min_real_similarity must be a number in "
                          f"[-1, 1] when open_set is given, got {threshold!r}")
    bank_path = _side_file(folder, section["bank_file"], f"{where}.bank_file", "memory bank")
    name = bank_path.name
    actual = _checked_sha256(bank_path, section["bank_sha256"], manifest_path, "memory bank")
    try:
        bank = np.load(bank_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BundleError(f"cannot read memory bank {bank_path} as a numpy .npy array (damaged or "
                          f"not an .npy file): {error}") from None
    expected = (n_bank, int(manifest["embedding_dim"]))
    if bank.shape != expected or not np.issubdtype(bank.dtype, np.floating):
        raise BundleError(f"memory bank {bank_path} has shape {bank.shape} ({bank.dtype}), the "
                          f"manifest implies float [{expected[0]}, {expected[1]}] "
                          f"(open_set.n_bank, embedding_dim)")
    if not np.isfinite(bank).all():
        raise BundleError(f"memory bank {bank_path} holds non-finite values (NaN or inf)")
    open_set = OpenSet(score=section["score"], k=k, bank=bank.astype(np.float32), bank_file=name,
                       bank_sha256=actual, bank_from=str(section.get("bank_from", "")))
    return {"open_set": open_set, "min_real_similarity_threshold": float(threshold)}


def _read_manifest(manifest_path: Path) -> dict:
    if not manifest_path.is_file():
        raise BundleError(f"manifest missing: {manifest_path} (not a bundle folder?)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"cannot parse {manifest_path}: {error}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object, not {type(manifest).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks required keys: {', '.join(missing)}")
    if manifest["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest['format']!r}, expected "
                          f"{BUNDLE_FORMAT!r}")
    if isinstance(manifest["format_version"], bool) or manifest["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_FORMAT_VERSIONS))
        raise BundleError(f"{manifest_path}: format_version {manifest['format_version']!r} is not "
                          f"supported by this runtime (it reads {supported}; a bundle from a newer "
                          f"adu_perception needs that version)")
    thresholds = manifest["thresholds"]
    if not isinstance(thresholds, dict):
        raise BundleError(f"{manifest_path}: thresholds must be an object")
    missing = [key for key in REQUIRED_THRESHOLDS if key not in thresholds]
    if missing:
        raise BundleError(f"{manifest_path}: thresholds lack {', '.join(missing)}")
    for key in REQUIRED_THRESHOLDS:
        value = thresholds[key]
        if not is_threshold(value):
            raise BundleError(f"{manifest_path}: thresholds.{key} must be a number in [0, 1], "
                              f"got {value!r}")
    for key in ("class_names", "domain_names", "memorized_domains", "forgotten_domains"):
        names = manifest[key]
        if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names) \
                or not all(isinstance(name, str) and name for name in names):
            raise BundleError(f"{manifest_path}: {key} must be a non-empty list of unique names "
                              f"(strings), got {names!r}")
    memorized, forgotten = manifest["memorized_domains"], manifest["forgotten_domains"]
    unknown = [d for d in memorized + forgotten if d not in manifest["domain_names"]]
    if unknown:
        raise BundleError(f"{manifest_path}: memorized/forgotten domains {unknown} are not in "
                          f"domain_names {manifest['domain_names']}")
    both = [d for d in memorized if d in forgotten]
    if both:
        raise BundleError(f"{manifest_path}: domains {both} are both memorized and forgotten")
    _check_preprocessing(manifest["preprocessing"], manifest_path)
    output_names = manifest["output_names"]
    if not isinstance(output_names, list) or sorted(map(str, output_names)) != sorted(OUTPUT_NAMES) \
            or not all(isinstance(name, str) for name in output_names):
        raise BundleError(f"{manifest_path}: output_names {manifest['output_names']} must be "
                          f"{list(OUTPUT_NAMES)}")
    for key in ("input_size", "embedding_dim"):
        if isinstance(manifest[key], bool) or not isinstance(manifest[key], int) or manifest[key] <= 0:
            raise BundleError(f"{manifest_path}: {key} must be a positive integer, got "
                              f"{manifest[key]!r}")
    return manifest


def _check_preprocessing(preprocessing, manifest_path: Path) -> None:
    if not isinstance(preprocessing, dict):
        raise BundleError(f"{manifest_path}: preprocessing must be an object, got {preprocessing!r}")
    for key, value in RUNTIME_PREPROCESSING.items():
        if key in preprocessing and preprocessing[key] != value:
            raise BundleError(f"{manifest_path}: preprocessing.{key} is {preprocessing[key]!r}, but this "
                              f"runtime feeds the graph {value!r} (the export writes {value!r})")


def graph_io(model_path: Path):
    """The graph's inputs [(name, element type, dims)] and outputs {name: (element type, dims)};
    dims are ints where fixed and a symbol (str) where dynamic. Reads the graph with onnx; an edge image
    without the onnx package uses an ONNX Runtime session instead."""
    try:
        import onnx
    except ImportError:
        return _graph_io_onnxruntime(model_path)

    def dims(value_info):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value_info.type.tensor_type.shape.dim]

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as error:  # protobuf raises several types for a damaged file
        raise BundleError(f"cannot read ONNX graph {model_path}: {error}") from None
    if not model.graph.node:  # protobuf parses an empty file, or some other data, as an empty model
        raise BundleError(f"{model_path} holds no ONNX graph (empty, or not an ONNX model)")
    constants = {init.name for init in model.graph.initializer}

    def element_type(value_info):
        return onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type).lower()

    inputs = [(i.name, element_type(i), dims(i)) for i in model.graph.input if i.name not in constants]
    return inputs, {o.name: (element_type(o), dims(o)) for o in model.graph.output}


def _graph_io_onnxruntime(model_path: Path):
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own types for a damaged file
        raise BundleError(f"cannot read ONNX graph {model_path}: {error}") from None

    def dims(shape):
        return [d if isinstance(d, int) else (d or "?") for d in shape]

    def element_type(node_arg):
        return node_arg.type.replace("tensor(", "").rstrip(")")

    inputs = [(i.name, element_type(i), dims(i.shape)) for i in session.get_inputs()]
    return inputs, {o.name: (element_type(o), dims(o.shape)) for o in session.get_outputs()}


def _check_graph(bundle: Bundle) -> None:
    """The ONNX graph's I/O must be what the manifest promises (a bundle assembled from
    the wrong model is refused here, not at the first frame)."""
    inputs, outputs = graph_io(bundle.model_path)
    where = f"{bundle.model_path.name} in {bundle.path}"
    if [name for name, _, _ in inputs] != [bundle.input_name]:
        raise BundleError(f"{where}: graph inputs are {[name for name, _, _ in inputs]}, manifest "
                          f"says [{bundle.input_name!r}]")
    _, element_type, dims = inputs[0]
    if element_type != "uint8":
        raise BundleError(f"{where}: input {bundle.input_name!r} is {element_type}, not uint8")
    size = bundle.input_size
    if len(dims) != 4 or dims[1:] != [size, size, 3]:
        raise BundleError(f"{where}: input shape {dims} disagrees with manifest input_size "
                          f"{size} (expected [N, {size}, {size}, 3])")
    if isinstance(dims[0], int):
        raise BundleError(f"{where}: the input's batch dimension is fixed at {dims[0]}; the runtime "
                          f"sends batches of any size (adu export writes a dynamic one)")
    missing = [name for name in OUTPUT_NAMES if name not in outputs]
    if missing:
        raise BundleError(f"{where}: graph lacks outputs {missing} (has {list(outputs)})")
    expected = {"probs": ("class", len(bundle.class_names)),
                "logits": ("class", len(bundle.class_names)),
                "domain_probs": ("domain", len(bundle.domain_names)),
                "embeddings": ("embedding", bundle.embedding_dim)}
    for name, (what, count) in expected.items():
        element_type, shape = outputs[name]
        if element_type != "float":
            raise BundleError(f"{where}: output {name} is {element_type}, not float (float32)")
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != count):
            raise BundleError(f"{where}: output {name} has shape {shape}, but the manifest has "
                              f"{count} {what} entries")
