"""One-off probe (not part of the package): how does a bundle's texture head behave when a
camera sees the same object at fewer pixels?

A real camera sees an object at every size, and the texture head reads each crop at zoom x
the model's input size, so a small crop is enlarged before its texture is read. This takes a
finished run's test images (PACS, 227 px), shrinks each to a shorter side of S px (area
averaging, as a camera's lower resolution would) and runs the exported bundle on them, as the
node would on a crop of that size. Per S it prints: correct real photos still reported (of
those correctly classified at that size), real photos suppressed for their texture, and
forgotten-domain images suppressed; also a second camera's real crops (64 px) shrunk the same
way, suppressed. Then the same at native size under common camera artefacts (JPEG, sensor
noise, motion blur, sharpening, digital zoom), which a texture statistic could mistake for
a print. docs/benchmark_styles.md quotes its output.

    .venv/bin/python docs/probes/texture_scale.py --run RUN --bundle BUNDLE [--sizes 32,48,64,96,128,192,0]
"""
import argparse
import glob
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from adu_perception.training.data import read_rgb  # noqa: E402
from adu_perception.runtime.predictor import Predictor  # noqa: E402


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """The image with its shorter side at `side` px (0 or larger than it: unchanged)."""
    height, width = image.shape[:2]
    scale = side / min(height, width)
    if side == 0 or scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


def degrade(image: np.ndarray, kind: str, rng) -> np.ndarray:
    """A camera's artefact on an image: JPEG at quality 30, sensor noise (sigma 8 of 255),
    a 7 px horizontal motion blur, an unsharp mask as camera pipelines apply (sigma 2, amount
    1.5; `sharpen3`: sigma 1, amount 3, beyond the range the head is fitted with), or a
    digital zoom (half size, then enlarged back, bicubic)."""
    if kind == "jpeg30":
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
        return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()
    if kind == "noise8":
        return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    if kind == "motion7":
        return cv2.filter2D(image, -1, np.full((1, 7), 1 / 7))
    if kind == "sharpen":
        blurred = cv2.GaussianBlur(image, (0, 0), 2)
        return cv2.addWeighted(image, 2.5, blurred, -1.5, 0)
    if kind == "sharpen3":
        blurred = cv2.GaussianBlur(image, (0, 0), 1)
        return cv2.addWeighted(image, 4.0, blurred, -3.0, 0)
    if kind == "zoom2":
        height, width = image.shape[:2]
        half = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
        return cv2.resize(half, (width, height), interpolation=cv2.INTER_CUBIC)
    raise ValueError(f"unknown degradation {kind!r}")


def classify(predictor, images, batch=64):
    return [d for s in range(0, len(images), batch) for d in predictor.classify_crops(images[s:s + batch])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the run folder (its checkpoint lists the test files)")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "pacs"))
    parser.add_argument("--crops", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "driving_crops"))
    parser.add_argument("--sizes", default="32,48,64,96,128,192,0", help="shorter sides in px; 0 = native")
    parser.add_argument("--degradations", default="jpeg30,noise8,motion7,sharpen,sharpen3,zoom2",
                        help="camera artefacts applied at native size, one row each")
    parser.add_argument("--per-domain", type=int, default=400, help="test images per forgotten domain (a seeded draw)")
    args = parser.parse_args()
    payload = torch.load(Path(args.run) / "checkpoint.pt", map_location="cpu", weights_only=False)
    predictor = Predictor(args.bundle, backend="onnxruntime-cpu")
    rng = np.random.default_rng(0)
    photos = [f for f in payload["test_files"] if f.split("/")[0] in payload["memorized_domains"]]
    forgotten = []
    for domain in payload["forgotten_domains"]:
        files = [f for f in payload["test_files"] if f.split("/")[0] == domain]
        forgotten += [files[i] for i in rng.permutation(len(files))[:args.per_domain]]
    labels = [f.split("/")[1] for f in photos]
    read = lambda files: [read_rgb(str(Path(args.data) / f)) for f in files]  # noqa: E731
    photo_images, forgotten_images = read(photos), read(forgotten)
    crops = sorted(glob.glob(str(Path(args.crops) / "*" / "*.png")))
    crop_images = [read_rgb(p) for p in crops]
    print(f"bundle {args.bundle} (texture head: {predictor.bundle.texture is not None}); "
          f"{len(photos)} real test photos, {len(forgotten)} forgotten-domain test images, {len(crops)} second-camera crops")
    print("| shorter side or artefact | correct real photos reported | real photos suppressed for texture "
          "| forgotten-domain images suppressed | second camera's crops suppressed |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rows = [(int(s), "") for s in args.sizes.split(",") if s] + [(0, d) for d in args.degradations.split(",") if d]
    for side, artefact in rows:
        change = (lambda i: shrink(i, side)) if not artefact else (lambda i: degrade(i, artefact, rng))
        real = classify(predictor, [change(i) for i in photo_images])
        correct = [d for d, label in zip(real, labels) if d.top_k[0]["label"] == label]
        kept = 100 * np.mean([d.reported for d in correct])
        texture = 100 * np.mean([d.reason == "illustrated_texture" for d in real])
        fake = 100 * np.mean([d.suppressed for d in classify(predictor, [change(i) for i in forgotten_images])])
        second = 100 * np.mean([d.suppressed for d in classify(predictor, [change(i) for i in crop_images])]) \
            if side == 0 or side < 64 else float("nan")  # the crops are 64 px: only smaller sides shrink them
        print(f"| {artefact or side or 'native'} | {kept:.1f} % (of {len(correct)}) | {texture:.1f} % | {fake:.1f} % | "
              + ("-" if np.isnan(second) else f"{second:.2f} %") + " |", flush=True)


if __name__ == "__main__":
    main()
