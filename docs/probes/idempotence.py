"""One-off probe (not part of the package): is an illustration a fixed point of simplification?

Detectors of generated images that carry to generators they never saw score how little an
image changes when it is passed once more through a reconstruction (DIRE, AEROBLADE): a
generator's output is nearly a fixed point of the generator. Drawn styles are simplifications
of a scene (fewer colours, flat regions, smoothed strokes), so a drawing should change less
under a further simplification than a photo does, whatever style drew it. No illustration
enters the fit: the score is one-class, set on PACS photos only.

For each simplification (colour quantisation, mean shift, edge-preserving smoothing, a median
filter) the score reads how far the image embedding moves (1 - cosine) and how far the pixels
move (mean absolute difference), at the model's 96 px; each alone counts an image that moves
less than photos do. `all` (`all:emb`, `all:px`: one space only) is the Mahalanobis distance of
the vector of all of them from PACS photos' own, fitted on 300 photos (and, with
--reference-artefacts, on their copies under each camera artefact, a Gaussian per condition,
the nearest counts); `all, disjoint` leaves out of it, for a family, the simplifications its own
renderer is built from. Each is thresholded at 5 % false suppression of 200 other photos and
reported on 200 fresh photos, the same re-drawn in each `adu stylize` family, the three PACS
illustration domains, a second camera's real crops (../shared/data/driving_crops), and the
fresh photos sharpened (texture_scale.py's `sharpen`) or enlarged from 1.5-3.5x smaller.
--detail adds each image's own detail (log Laplacian variance, log mean gradient) to the
vector `all` reads.
--camera-in-fit N fits N other crops of the second camera as one more photo condition, as a
user would fit the score on the vehicle camera's own photos.

With --run R --bundle B the embeddings are the bundle's graph's (ADU's prompted model), the
photos come from the run's test files only, and a second table adds the bundle's own rule
(its thresholds), and either of the two, with the share of correctly classified photos kept.

    .venv/bin/python docs/probes/idempotence.py --seed 0   # about 2 min on 2 cores
    .venv/bin/python docs/probes/idempotence.py --seed 0 --reference-artefacts jpeg,noise,blur,sharpen,resample
    .venv/bin/python docs/probes/idempotence.py --seed 1 --reference-artefacts jpeg,noise,blur,sharpen,resample \
        --run runs/ref_s1 --bundle bundles/ref_s1   # about 4 min
"""
import argparse
import glob
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from adu_perception.training.camera_artefacts import camera_copies  # noqa: E402
from adu_perception.training.data import load_images, read_rgb, resize_center_crop  # noqa: E402
from adu_perception.training.stylize import FAMILIES, render_batch  # noqa: E402
from adu_perception.training.trainer import to_model_input  # noqa: E402
from texture_scale import degrade  # noqa: E402  (the sibling probe's camera artefacts)
from texture_tiles import fit_gaussian, frozen_proxy, proxy_pacs, resample  # noqa: E402

SIZE = 96  # the proxy CLIP's input size


def quantise(image, colours=8):
    pixels = image.reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(pixels, colours, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    return centres[labels.ravel()].reshape(image.shape).clip(0, 255).astype(np.uint8)


SIMPLIFICATIONS = {
    "quantise": quantise,
    "meanshift": lambda image: cv2.pyrMeanShiftFiltering(image, 6, 24),
    "edge_preserving": lambda image: cv2.edgePreservingFilter(image, flags=1, sigma_s=20, sigma_r=0.25),
    "median": lambda image: cv2.medianBlur(image, 5),
}

# the simplifications each renderer is itself built from (training/stylize.py): `disjoint` leaves them out
RENDERER_USES = {"flat_vector": ("quantise", "median"), "comic": ("quantise", "median"),
                 "pictogram": ("quantise",), "painterly": ("edge_preserving",)}


def frozen_embedding(clip):
    def embed(images):
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(images)), clip.mean, clip.std)
        with torch.no_grad():
            z = torch.cat([clip.model.encode_image(x[s:s + 256]) for s in range(0, len(x), 256)])
        return torch.nn.functional.normalize(z, dim=1).numpy()
    return embed


def bundle_embedding(predictor):
    def embed(images):
        z = np.concatenate([predictor.predict(images[s:s + 256])["embeddings"] for s in range(0, len(images), 256)])
        return z / np.linalg.norm(z, axis=1, keepdims=True)
    return embed


def detail(image):
    """How much fine detail an image holds: log variance of its Laplacian, log mean gradient."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return np.log(cv2.Laplacian(gray, cv2.CV_32F).var() + 1.0), np.log(gradient.mean() + 1.0)


def movements(embed, images, with_detail=False):
    """[N, 2 x ops (+ 2)]: per simplification, embedding movement (1 - cos) then pixel movement;
    with_detail, the image's own detail last, so that the photos' Gaussian can tie how far a
    photo moves to how sharp it was."""
    z = embed(images)
    columns = []
    for simplify in SIMPLIFICATIONS.values():
        simplified = np.stack([simplify(np.ascontiguousarray(i)) for i in images])
        columns.append(1.0 - (embed(simplified) * z).sum(1))
        columns.append(np.abs(simplified.astype(np.float32) - images.astype(np.float32)).mean((1, 2, 3)) / 255)
    if with_detail:
        columns += list(np.array([detail(i) for i in images]).T)
    return np.stack(columns, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared"))
    parser.add_argument("--seed", type=int, default=0, help="draw of photos and render seeds")
    parser.add_argument("--false-suppression", type=float, default=0.05)
    parser.add_argument("--reference-artefacts", default="",
                        help="camera conditions the photos' reference also holds, comma-separated (jpeg, noise, "
                        "blur, sharpen, resample): `all` is then the distance to the nearest condition's Gaussian")
    parser.add_argument("--run", help="with --bundle: a run of `adu train` whose test photos are drawn (never "
                        "its training or calibration ones) and whose bundle's rule is scored beside the score")
    parser.add_argument("--bundle", help="the run's bundle (`adu export`): its graph's embeddings replace the "
                        "frozen proxy's")
    parser.add_argument("--detail", action="store_true", help="add the image's own detail (Laplacian variance, "
                        "mean gradient) to the vector `all` reads")
    parser.add_argument("--camera-in-fit", type=int, default=0, metavar="N",
                        help="N other crops of the second camera fitted as one more photo condition (the scored "
                        "200 stay the same): the score fitted on the deployment camera's own photos")
    args = parser.parse_args()
    shared, data = proxy_pacs(args.shared, "idempotence")
    rng = np.random.default_rng(args.seed)
    allowed, predictor = None, None
    if args.bundle:
        from adu_perception.runtime.predictor import Predictor
        predictor = Predictor(args.bundle)
        allowed = set(torch.load(Path(args.run) / "checkpoint.pt", map_location="cpu", weights_only=False)["test_files"])
        embed = bundle_embedding(predictor)
    else:
        embed = frozen_embedding(frozen_proxy(shared))

    def measure(images):
        return movements(embed, images, args.detail)

    def pick(domain, n):
        d = data.domains.index(domain)
        items = [s for s in data.samples if s.domain_index == d and (allowed is None or s.path in allowed)]
        return [items[i] for i in rng.permutation(len(items))[:n]]

    def load(samples):
        return load_images(data.root, samples, SIZE)[0]

    photos = pick("photo", 10_000)
    fit, calibration, test = load(photos[:300]), load(photos[300:500]), load(photos[500:700])
    labels = np.array([s.class_index for s in photos[500:700]])
    crops = sorted(glob.glob(str(shared / "data" / "driving_crops" / "*" / "*.png")))
    crops = [crops[i] for i in rng.permutation(len(crops))]
    own_camera = [resize_center_crop(read_rgb(p), SIZE) for p in crops[200:200 + args.camera_in_fit]]
    crops = crops[:200]
    units = {"photos (fresh)": test,
             "sharpened photos": np.stack([degrade(i, "sharpen", None) for i in test]),
             "enlarged photos": resample(test, 99),
             "second camera": np.stack([resize_center_crop(read_rgb(p), SIZE) for p in crops]),
             **{f: render_batch(test, f, 7 + 10 * args.seed) for f in FAMILIES},
             **{d: load(pick(d, 200)) for d in ("art_painting", "cartoon", "sketch")}}

    artefacts = [a for a in args.reference_artefacts.split(",") if a]
    conditions = [fit] + [camera_copies(fit, 11, [a]) if a != "resample" else resample(fit, 11) for a in artefacts]
    conditions += [np.stack(own_camera)] if own_camera else []  # the vehicle camera's own photos, a condition
    condition_movements = [measure(images) for images in conditions]
    mu, sd = condition_movements[0].mean(0), condition_movements[0].std(0)  # one scale for the shrinkage
    names = [f"{op}:{space}" for op in SIMPLIFICATIONS for space in ("embedding", "pixels")]
    names += ["detail:laplacian", "detail:gradient"] if args.detail else []

    def distance(columns):  # to the nearest camera condition's Gaussian, on the simplifications in `columns`
        gaussians = [fit_gaussian(((m - mu) / sd)[:, columns]) for m in condition_movements]
        return lambda m: np.min([g(((m - mu) / sd)[:, columns]) for g in gaussians], 0)

    every = list(range(len(names)))
    scorers = {**{n: (lambda i: lambda m: -m[:, i])(i) for i, n in enumerate(names)},
               "all:emb": distance([i for i in every if not names[i].endswith("pixels")]),
               "all:px": distance([i for i in every if not names[i].endswith("embedding")]),
               "all": distance(every)}
    # `disjoint`: for a family, only the simplifications its own renderer does not use
    own = {f: [i for i, n in enumerate(names) if n.split(":")[0] in RENDERER_USES.get(f, ())] for f in FAMILIES}
    disjoint = {f: distance([i for i in every if i not in own[f]]) for f in FAMILIES}

    reference = measure(calibration)  # thresholds on photos the fit never saw
    thresholds = {n: np.quantile(score(reference), 1 - args.false_suppression) for n, score in scorers.items()}
    disjoint_thresholds = {f: np.quantile(score(reference), 1 - args.false_suppression) for f, score in disjoint.items()}
    rows = {unit: measure(images) for unit, images in units.items()}
    print(f"seed {args.seed}: % flagged at {100 * args.false_suppression:.0f} % false suppression of "
          f"{len(calibration)} calibration photos (Gaussians fitted on {len(fit)} others"
          f"{', with ' + ', '.join(artefacts) if artefacts else ''}"
          f"{f'; and {len(own_camera)} second-camera crops' if own_camera else ''})")
    print(f"{'unit':<18}" + "".join(f"{n.replace(':embedding', ':emb').replace(':pixels', ':px'):>17}"
                                    for n in thresholds) + f"{'all, disjoint':>15}")
    rates = {}
    for unit, m in rows.items():
        rates[unit] = [100 * np.mean(scorers[n](m) >= t) for n, t in thresholds.items()]
        if unit in disjoint:
            rates[unit].append(100 * np.mean(disjoint[unit](m) >= disjoint_thresholds[unit]))
        print(f"{unit:<18}" + "".join(f"{r:>17.1f}" for r in rates[unit][:len(thresholds)])
              + (f"{rates[unit][-1]:>15.1f}" if unit in disjoint else ""))
    print(f"{'families, mean':<18}" + "".join(f"{r:>17.1f}" for r in np.mean([rates[f] for f in FAMILIES], 0)))
    if predictor is not None:
        bundle_rule(predictor, units, rows, labels, scorers["all"], thresholds["all"])


def bundle_rule(predictor, units, rows, labels, score, threshold):
    """The bundle's own rule (its thresholds), the score alone (`all`), and either of them."""
    print("\nthe bundle's rule / `all` alone / either, % suppressed (photos: % of correctly classified kept)")
    means = []
    for unit, images in units.items():
        decisions = predictor.classify(images)
        by_rule = np.array([d.suppressed for d in decisions])
        by_score = score(rows[unit]) >= threshold
        shares = [by_rule, by_score, by_rule | by_score]
        if unit == "photos (fresh)":  # correct: the top class, whether reported or not
            names = np.array(predictor.bundle.class_names)
            correct = np.array([d.top_k[0]["label"] for d in decisions]) == names[labels]
            shares = [~s[correct] for s in shares]
            unit = f"{unit}, {correct.sum()} correct"
        rates = [100 * np.mean(s) for s in shares]
        if unit in FAMILIES:
            means.append(rates)
        print(f"{unit:<30}" + "".join(f"{r:>8.1f}" for r in rates))
    print(f"{'families, mean':<30}" + "".join(f"{r:>8.1f}" for r in np.mean(means, 0)))


if __name__ == "__main__":
    main()
