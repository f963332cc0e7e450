"""One-off probe (not part of the package): does texture at the model's own scale carry to an
illustration family never trained on?

A linear real-against-illustrated probe on the frozen proxy CLIP's first layer (the patch
embedding convolution's per-channel mean and std), computed on 96 px tiles cut from images
loaded and re-drawn at ZOOM x 96 px. Trained on PACS photos against 7 `adu stylize` families
and the three PACS illustration domains, scored on the 8th family (each in turn) at a fixed
5 % false suppression of fresh PACS photos; also the share of real driving crops (a second
camera) it calls illustrated, and each PACS domain left out in turn (trained on the 8
families and the other two domains). Also the share of the fresh PACS photos, sharpened as a
camera pipeline may (unsharp mask sigma 2, amount 1.5, as texture_scale.py's `sharpen`), that
it calls illustrated. With --artefacts, every image of the fit is added once more with each
of those camera artefacts (training.camera_artefacts; `resample`, here only: a small object
enlarged, down 1.5-3.5x and back up). docs/benchmark_styles.md quotes its output.

--score gaussian drops the illustrations from the fit: a one-class score, the Mahalanobis
distance of a tile's statistics from the photos' tiles (one Gaussian, shrunk covariance;
`gaussian-per-condition`: one Gaussian per camera condition, the original photos and each
artefact's copies, and the distance to the nearest). --calibration-artefacts sets the 5 %
threshold on the calibration photos and their artefact copies instead of the photos alone.
--no-families fits the logistic on the PACS domains only, as a bundle of a run without
--rendered: every family is then unseen.

Richer statistics and upper bounds (docs/benchmark_styles.md, "Richer texture statistics"):
--features gram adds the covariances of the stem's outputs in the training photos' top
principal directions, energy adds quantiles of the patches' log output energy, embedding
replaces all with each tile's final image embedding; --score logistic-max fits one head per
illustration group and counts the highest; --seen keeps the scored family in the fit,
pooled with the others or alone.

    .venv/bin/python docs/probes/texture_tiles.py --zoom 2 --seed 0   # about 4 min on 2 cores
    .venv/bin/python docs/probes/texture_tiles.py --zoom 2 --seed 0 --artefacts jpeg,noise,blur,sharpen
    .venv/bin/python docs/probes/texture_tiles.py --seed 0 --artefacts jpeg,noise,blur,sharpen --score gaussian
    .venv/bin/python docs/probes/texture_tiles.py --seed 0 --features moments --seen alone
"""
import argparse
import glob
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from adu_perception.runtime.texture import tiles  # noqa: E402
from adu_perception.training.camera_artefacts import camera_copies  # noqa: E402
from adu_perception.training.clip_loader import ClipSpec, load_clip  # noqa: E402
from adu_perception.training.data import MultiDomainDataset, load_images, read_rgb, resize_center_crop  # noqa: E402
from adu_perception.training.stylize import FAMILIES, render_batch  # noqa: E402
from adu_perception.training.trainer import to_model_input  # noqa: E402
from texture_scale import degrade  # noqa: E402  (the sibling probe's camera artefacts)

TILE = 96  # the proxy CLIP's input size


def stem_outputs(clip, images):
    """The patch-embedding convolution's outputs, [N, C, patches]."""
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(images)), clip.mean, clip.std)
    with torch.no_grad():
        return torch.cat([clip.model.visual.conv1(x[s:s + 256]).flatten(2) for s in range(0, len(x), 256)])


def stem_statistics(out, kinds, basis):
    """One row per image: per-channel mean and std (the head's statistics), and with `gram` the
    covariance of the patches' outputs in `basis` (cross-channel correlations: Gatys' style
    representation), with `energy` quantiles of the patches' log output energy (flat regions)."""
    rows = [out.mean(2), out.std(2)]
    centred = out - out.mean(2, keepdim=True)
    if "gram" in kinds:
        z = torch.einsum("kc,ncp->nkp", basis, centred)
        cov = torch.einsum("nkp,njp->nkj", z, z) / z.shape[2]
        upper = torch.triu_indices(len(basis), len(basis), 1)
        rows.append(cov[:, upper[0], upper[1]])
    if "energy" in kinds:
        energy = torch.log(centred.pow(2).sum(1) + 1e-6)
        rows.append(torch.quantile(energy, torch.tensor([0.05, 0.1, 0.25, 0.5, 0.75, 0.9]), dim=1).T)
    return torch.cat(rows, 1).numpy()


def fit_logistic(x, y, l2=1e-2):
    """Class-balanced L2 logistic regression (LBFGS); returns the logit function."""
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    pos = y.mean()
    weights = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")).mean()
        loss = loss + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda q: (torch.tensor(q, dtype=torch.float32) @ w + b).detach().numpy()


def fit_gaussian(x, shrinkage=0.1):
    """Squared Mahalanobis distance to the rows of x (covariance shrunk towards its mean variance)."""
    covariance = np.cov(x, rowvar=False)
    covariance = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / len(covariance) * np.eye(len(covariance))
    centre, precision = x.mean(0), np.linalg.inv(covariance)
    return lambda q: np.einsum("ij,jk,ik->i", q - centre, precision, q - centre)


def proxy_pacs(shared, probe):
    """The shared folder and its PACS downstream half (the proxy's splits), or exit naming what is missing."""
    shared = Path(shared)
    if not (shared / "data" / "pacs").is_dir():
        sys.exit(f"{probe}: {shared}/data/pacs not found (pass --shared)")
    torch.set_num_threads(2)
    return shared, MultiDomainDataset.scan(str(shared / "data" / "pacs"),
                                           str(shared / "models" / "proxy-clip" / "splits.txt"))


def frozen_proxy(shared):
    model = Path(shared) / "models" / "proxy-clip"
    return load_clip(ClipSpec.from_args(None, str(model / "proxy-vit-tiny-96.pt"), str(model / "proxy-vit-tiny-96.json")))


def resample(images, seed):
    """A small object enlarged: each image shrunk 1.5-3.5x (area), then enlarged back (bilinear or bicubic)."""
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        factor, (height, width) = rng.uniform(1.5, 3.5), image.shape[:2]
        small = cv2.resize(image, (int(width / factor), int(height / factor)), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(small, (width, height), interpolation=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[rng.integers(2)]))
    return np.stack(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared"))
    parser.add_argument("--zoom", type=int, default=2, help="images at ZOOM x 96 px, ZOOM x ZOOM tiles")
    parser.add_argument("--seed", type=int, default=0, help="draw of photos and render seeds")
    parser.add_argument("--artefacts", default="", help="camera artefacts added to the fit's images, "
                        "comma-separated (jpeg, noise, blur, sharpen, resample; default: none)")
    parser.add_argument("--score", default="logistic", choices=("logistic", "logistic-max", "gaussian", "gaussian-per-condition"),
                        help="logistic: photos against illustrations; logistic-max: one such head per illustration "
                        "group, the highest counts; gaussian: one-class, photos only")
    parser.add_argument("--no-families", action="store_true",
                        help="fit on no rendered family (as a run without --rendered): every family is unseen")
    parser.add_argument("--features", default="moments",
                        help="comma-separated: moments (the head's), gram, energy (each adds to moments); "
                        "or embedding alone (the final image embedding of each tile)")
    parser.add_argument("--gram-rank", type=int, default=16, help="photo principal directions the gram uses")
    parser.add_argument("--seen", choices=("pooled", "alone"),
                        help="keep each scored family in the fit, with the others (pooled) or as the only "
                        "illustrations (alone): an upper bound, is it separable from photos at all?")
    parser.add_argument("--calibration-artefacts", action="store_true",
                        help="the threshold also counts the calibration photos' artefact copies")
    args = parser.parse_args()
    shared, data = proxy_pacs(args.shared, "texture_tiles")
    clip = frozen_proxy(shared)
    size, rng = TILE * args.zoom, np.random.default_rng(args.seed)

    def pick(domain, n):
        d = data.domains.index(domain)
        items = [s for s in data.samples if s.domain_index == d]
        return [items[i] for i in rng.permutation(len(items))[:n]]

    def load(samples):
        return load_images(data.root, samples, size)[0]

    kinds, basis = set(args.features.split(",")), None

    def features(images):
        if kinds == {"embedding"}:  # the frozen model's final image embedding of each tile
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(tiles(images, TILE))), clip.mean, clip.std)
            with torch.no_grad():
                return torch.cat([clip.model.encode_image(x[s:s + 256]) for s in range(0, len(x), 256)]).numpy()
        return stem_statistics(stem_outputs(clip, tiles(images, TILE)), kinds, basis)

    artefacts = [a for a in args.artefacts.split(",") if a]

    def with_artefacts(images, seed):  # the fit's images, then a copy of each per artefact, artefact by artefact
        parts = [images, camera_copies(images, seed, [a for a in artefacts if a != "resample"])]
        if "resample" in artefacts:
            parts.append(resample(images, seed + 555))
        return np.concatenate(parts)

    photos = pick("photo", 10_000)
    train_photos, calibration, test = load(photos[:240]), load(photos[240:440]), load(photos[440:640])
    if "gram" in kinds:  # the gram's basis: the training photos' top principal directions of the stem's outputs
        out = stem_outputs(clip, tiles(train_photos, TILE))
        basis = torch.linalg.svd((out - out.mean(2, keepdim=True)).permute(0, 2, 1).reshape(-1, out.shape[1]),
                                 full_matrices=False).Vh[:args.gram_rank]
    pacs = {d: load(pick(d, 240)) for d in ("art_painting", "cartoon", "sketch")}
    crops = sorted(glob.glob(str(shared / "data" / "driving_crops" / "*" / "*.png")))
    crops = [crops[i] for i in rng.permutation(len(crops))[:200]]
    driving = features(np.stack([resize_center_crop(read_rgb(p), size) for p in crops]))
    f_calibration = features(calibration)
    f_threshold = features(with_artefacts(calibration, 11)) if args.calibration_artefacts else f_calibration
    rendered = {f: render_batch(train_photos, f, 3 + 10 * args.seed) for f in FAMILIES}
    f_held = {f: features(render_batch(test, f, 7 + 10 * args.seed)) for f in FAMILIES}

    # drawn after the rest so that the family rows do not depend on it
    pacs_held = {d: features(load(pick(d, 200))) for d in pacs}
    sharpened = features(np.stack([degrade(i, "sharpen", None) for i in test]))
    f_train = features(with_artefacts(train_photos, 1))
    pacs = {d: features(with_artefacts(images, 2)) for d, images in pacs.items()}
    f_rendered = {f: features(with_artefacts(images, 3)) for f, images in rendered.items()}

    groups = {**({} if args.no_families else f_rendered), **pacs}  # the illustrations a fit may use

    def in_fit(name, held):  # leave the scored unit out, unless --seen keeps it (alone: it only)
        return name == held if args.seen == "alone" else name != held or args.seen == "pooled"

    suppressed, driving_flagged, sharpened_flagged = {}, [], []
    for held in list(FAMILIES) + list(pacs):
        fakes = np.concatenate([f for name, f in groups.items() if in_fit(name, held)])
        x = np.concatenate([f_train, fakes])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        if args.score == "logistic":
            logit = fit_logistic((x - mu) / sd, np.r_[np.zeros(len(f_train)), np.ones(len(fakes))])
        elif args.score == "logistic-max":  # one head per illustration group, each shifted to its own
            heads = []                      # 95 % point on the calibration photos; the highest counts
            for name, group in groups.items():
                if not in_fit(name, held):
                    continue
                head = fit_logistic((np.concatenate([f_train, group]) - mu) / sd,
                                    np.r_[np.zeros(len(f_train)), np.ones(len(group))])
                edge = np.quantile(head((f_calibration - mu) / sd).reshape(-1, args.zoom ** 2).mean(1), 0.95)
                heads.append((head, edge))
            logit = lambda q, heads=heads: np.max([h(q) - e for h, e in heads], axis=0)
        elif args.score == "gaussian":  # the photos alone (standardised, as above, over the whole fit)
            logit = fit_gaussian((f_train - mu) / sd)
        else:  # the nearest of one Gaussian per camera condition (rows: originals, then each artefact)
            conditions = [fit_gaussian(block, 0.2) for block in np.split((f_train - mu) / sd, 1 + len(artefacts))]
            logit = lambda q, conditions=conditions: np.min([d(q) for d in conditions], axis=0)

        def score(f):  # an image's score: its tiles' mean logit
            return logit((f - mu) / sd).reshape(-1, args.zoom ** 2).mean(1)

        threshold = np.quantile(score(f_threshold), 0.95)
        suppressed[held] = 100 * (score(f_held[held] if held in f_held else pacs_held[held]) > threshold).mean()
        if held in f_held:
            driving_flagged.append(100 * (score(driving) > threshold).mean())
            sharpened_flagged.append(100 * (score(sharpened) > threshold).mean())
    print(f"zoom {args.zoom}, seed {args.seed}, features {args.features}, score {args.score}, artefacts {args.artefacts or 'none'}"
          f"{' (threshold counts them)' if args.calibration_artefacts else ''}"
          f"{', no family in the fit' if args.no_families else ''}: family left out suppressed "
          f"{np.mean([suppressed[f] for f in FAMILIES]):.1f} % (mean of 8), real driving crops called illustrated "
          f"{np.mean(driving_flagged):.1f} %, sharpened real photos {np.mean(sharpened_flagged):.1f} %; "
          f"PACS domain left out {np.mean([suppressed[d] for d in pacs]):.1f} % (mean of 3)")
    for name, rate in suppressed.items():
        print(f"  {name}: {rate:.1f} %")


if __name__ == "__main__":
    main()
