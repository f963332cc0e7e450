"""Multi-domain image folders `<root>/<domain>/<class>/*`, split files, few-shot sampling
and image loading (OpenCV, the same resize + center crop the node uses)."""
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

# One resize + crop for training, export and the node: the thresholds see the node's pixels.
from adu_perception.runtime.images import resize_center_crop

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """The dataset folder, split file or domain selection cannot be used."""


@dataclass(frozen=True)
class Sample:
    path: str          # relative to the dataset root: domain/class/file
    class_index: int
    domain_index: int


@dataclass
class MultiDomainDataset:
    root: Path
    domains: List[str]
    classes: List[str]
    samples: List[Sample]

    @classmethod
    def scan(cls, root, split_file: Optional[str] = None, split: str = "downstream"):
        root = Path(root)
        if root.is_file():
            raise DataError(f"dataset path {root} is a file; give the folder holding "
                            f"<domain>/<class>/* images")
        if not root.is_dir():
            raise DataError(f"dataset folder not found: {root}")
        allowed = read_split_file(split_file, split) if split_file else None
        domains = sorted(p.name for p in _folders(root))
        if not domains:
            raise DataError(f"no domain folders in {root} (expected <root>/<domain>/<class>/*)")
        classes = sorted({c.name for d in domains for c in _folders(root / d)})
        samples = []
        for domain_index, domain in enumerate(domains):
            count = 0
            for class_index, name in enumerate(classes):
                folder = root / domain / name
                if not folder.is_dir():
                    continue
                for file in sorted(folder.iterdir()):
                    relative = f"{domain}/{name}/{file.name}"
                    if file.suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    if allowed is not None and relative not in allowed:
                        continue
                    samples.append(Sample(relative, class_index, domain_index))
                    count += 1
            if count == 0:
                where = f" in split {split!r}" if allowed is not None else ""
                hint = ""
                if any(f.suffix.lower() in IMAGE_SUFFIXES for f in (root / domain).iterdir()):
                    hint = (f" (it holds images directly: is {root} one level too deep? --data is "
                            f"the folder holding the domain folders)")
                raise DataError(f"domain folder {root / domain} has no images{where}{hint}")
        empty = sorted(set(classes) - {classes[s.class_index] for s in samples})
        if empty and allowed is None:
            raise DataError(f"class folder(s) {', '.join(empty)} under {root} hold no images in any "
                            f"domain: remove them (a class with no image cannot be learned or scored)")
        if empty:  # classes of another split only: this split's dataset leaves them out
            log.info("classes %s have no images in split %r: left out", ", ".join(empty), split)
            kept = [c for c in classes if c not in empty]
            samples = [Sample(s.path, kept.index(classes[s.class_index]), s.domain_index) for s in samples]
            classes = kept
        if allowed is not None:
            missing = allowed - {s.path for s in samples}
            if missing:
                log.warning("%d of the %d files the split file lists for %r are not images under %s, "
                            "e.g. %s", len(missing), len(allowed), split, root, sorted(missing)[0])
        return cls(root, domains, classes, samples)

    def domain_indices(self, names: Sequence[str]) -> List[int]:
        unknown = [n for n in names if n not in self.domains]
        if unknown:
            raise DataError(f"unknown domain(s) {', '.join(unknown)}; this dataset has "
                            f"{', '.join(self.domains)}")
        return [self.domains.index(n) for n in names]


def _folders(path: Path) -> List[Path]:
    """Sub-folders, without hidden ones (.ipynb_checkpoints, .thumbs, ...)."""
    return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]


def read_split_file(path, split: str) -> set:
    """Lines `domain/class/file<TAB>split`; returns the files of the wanted split."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"split file {path} is a folder, not a file")
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise DataError(f"split file {path} is not UTF-8 text ({error})") from None
    chosen, splits = set(), set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected 'domain/class/file<TAB>split'")
        splits.add(parts[1].strip())
        if parts[1].strip() == split:
            chosen.add(parts[0].strip())
    if not chosen:
        raise DataError(f"split file {path} lists no images for split {split!r} (its splits: "
                        f"{', '.join(sorted(splits)) or 'none'})")
    return chosen


def resolve_domains(dataset: MultiDomainDataset, forget: Sequence[str],
                    memorize: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
    """Validate the forget/memorize choice; memorize defaults to every other domain."""
    forget, memorize = list(dict.fromkeys(forget)), list(dict.fromkeys(memorize))  # once each
    dataset.domain_indices(forget)
    memorize = list(memorize) or [d for d in dataset.domains if d not in forget]
    dataset.domain_indices(memorize)
    if not memorize:
        raise DataError(f"cannot forget every domain ({', '.join(forget)}): "
                        f"at least one domain must be memorized")
    overlap = set(forget) & set(memorize)
    if overlap:
        raise DataError(f"domain(s) {', '.join(sorted(overlap))} cannot be both forgotten and memorized")
    return list(forget), memorize


def few_shot_split(samples: Sequence[Sample], shots: int, seed: int, calibration: int = 0):
    """Per (class, domain), seeded: `shots` images for training, then up to `calibration`
    images (at most half of the rest) for choosing decision thresholds; the rest is the test
    set. Returns (train, calibration, test). The training draw does not depend on
    `calibration`, so a seed gives the same shots with or without it."""
    groups: Dict[Tuple[int, int], List[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.class_index, sample.domain_index), []).append(sample)
    rng = np.random.default_rng(seed)
    calibration_rng = np.random.default_rng([seed, 1])
    train, held_for_calibration, test = [], [], []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda s: s.path)
        chosen = set(rng.choice(len(group), size=min(shots, len(group)), replace=False).tolist())
        rest = [i for i in range(len(group)) if i not in chosen]
        n_calibration = min(calibration, len(rest) // 2)
        calibrating = set(calibration_rng.choice(rest, size=n_calibration, replace=False).tolist()) \
            if n_calibration else set()
        for index, sample in enumerate(group):
            if index in chosen:
                train.append(sample)
            elif index in calibrating:
                held_for_calibration.append(sample)
            else:
                test.append(sample)
    return train, held_for_calibration, test


def read_rgb(path) -> Optional[np.ndarray]:
    """RGB uint8 image, or None if the file is missing, corrupt or not an image."""
    if not Path(path).is_file():
        return None  # (OpenCV would print a warning of its own for each)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_images(root, samples: Sequence[Sample], size: int, workers: int = 2,
                desc: Optional[str] = None):
    """Decode, resize and crop every sample: (uint8 [N, size, size, 3], kept samples, skipped).

    Unreadable images are skipped and counted, never a crash mid-epoch.
    """
    root = Path(root)

    def load(sample):
        image = read_rgb(root / sample.path)
        return None if image is None else resize_center_crop(image, size)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV decodes without the GIL
        images = list(tqdm(pool.map(load, samples), total=len(samples), desc=desc,
                           disable=desc is None, leave=False))
    kept = [(img, s) for img, s in zip(images, samples) if img is not None]
    skipped = [s.path for img, s in zip(images, samples) if img is None]
    if skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(skipped), skipped[0])
    if not kept:
        return np.zeros((0, size, size, 3), np.uint8), [], len(skipped)
    return np.stack([img for img, _ in kept]), [s for _, s in kept], len(skipped)
