"""`adu benchmark styles`: is an illustration suppressed when its style was never trained on?

Held-out units are the illustration families of `stylize.py` (memorised-domain test photos
re-drawn) and, optionally, the dataset's own forgotten domains. For each unit and method one
run trains without it (`--rendered` with every other family; a held-out dataset domain is
left out of training altogether), the thresholds are chosen on calibration images that never
show it, and the held-out test images are scored. A reference run trains with no rendered
data at all, so every family is unseen by it.

Decision rules scored on the same model (adu_perception.runtime.decision):
- `domain`: the forgotten-domain and confidence thresholds (open set off);
- `open-set`: plus the one-class rule (kNN similarity to the memorised-domain bank);
- `texture` (with `--texture-zoom`): the domain rule with the texture head's score beside
  the domain head's (runtime.texture), the head fitted on the run's own training images and
  families only. Then every image is also read at zoom x the input size, rendered images are
  drawn at that size, and the model sees them downsampled (as a camera crop would be).
Rates: suppressed = share of the held-out images not reported; kept = share of the
correctly classified memorised-domain test photos still reported. The operating-point view
fixes the false suppression of those photos at 5 % for one score (the domain head's summed
forgotten probability, or 1 - kNN similarity) and reports the held-out suppression there.
"""
import copy
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .clip_loader import ClipSpec, load_clip
from .config import TrainConfig
from .data import load_images, resolve_domains
from .evaluate import predict
from .rendered import resolve_families, with_rendered_copies, with_rendered_copies_at_two_sizes
from .trainer import PreparedData, add_rendered_training_data, prepare_data, train

log = logging.getLogger(__name__)

FALSE_SUPPRESSION_GRID = np.round(np.arange(0.0, 0.301, 0.01), 2)  # the curve's x axis
OPERATING_POINT = 0.05
REFERENCE = "none (no rendered training)"


def held_out_units(families: Sequence[str], domains: Sequence[str]) -> List[dict]:
    return ([{"kind": "family", "name": f} for f in families]
            + [{"kind": "domain", "name": d} for d in domains])


def training_config(base: TrainConfig, method: str, unit: Optional[dict], families: Sequence[str],
                    forget: Sequence[str], seed: int) -> TrainConfig:
    """The run that never sees `unit` (None: the reference run, no rendered data)."""
    values = {**base.to_dict(), "method": method, "seed": seed, "forget": list(forget)}
    if unit is None:
        values.update(rendered="off", rendered_families=[])
    else:
        rendered = base.rendered if base.rendered != "off" else "pooled"
        kept = [f for f in families if not (unit["kind"] == "family" and unit["name"] == f)]
        values.update(rendered=rendered, rendered_families=kept)
        if unit["kind"] == "domain":
            values["forget"] = [d for d in forget if d != unit["name"]]
    return TrainConfig(**values)


def operating_point(real_scores: np.ndarray, unit_scores: np.ndarray,
                    false_suppression: float) -> float:
    """Share of unit items suppressed when the threshold on an illustration score (higher =
    more illustrated) lets `false_suppression` of the real items be suppressed."""
    threshold = np.quantile(real_scores, 1.0 - false_suppression) if false_suppression > 0 \
        else np.max(real_scores)
    return float((unit_scores > threshold).mean())


def score_rules(model_outputs: Dict[str, dict], classes_real: np.ndarray, thresholds: Dict[str, dict],
                forgotten_mask: np.ndarray, bank: np.ndarray, k: int) -> Dict[str, dict]:
    """Rates of each rule on the correct real test photos and the held-out images;
    model_outputs[name] may carry "p_texture" [N] (texture head on)."""
    from adu_perception.runtime.decision import decide
    from adu_perception.runtime.open_set import real_similarity

    real, unit = model_outputs["real"], model_outputs["unit"]
    correct = real["probs"].argmax(1) == classes_real
    similarity = {name: real_similarity(out["embeddings"], bank, k) for name, out in model_outputs.items()}
    result = {}
    for rule, chosen in thresholds.items():
        open_set = rule == "open-set"

        def suppressed(name):
            out = model_outputs[name]
            return ~decide(out["probs"], out["domain_probs"], forgotten_mask, chosen["confidence"],
                           chosen["forgotten_domain"],
                           real_similarity=similarity[name] if open_set else None,
                           min_real_similarity=chosen.get("min_real_similarity") if open_set else None,
                           p_texture=out["p_texture"] if rule == "texture" else None).reported

        result[rule] = {"kept": float(1 - suppressed("real")[correct].mean()),
                        "suppressed": float(suppressed("unit").mean()),
                        "thresholds": {k_: v for k_, v in chosen.items()
                                       if k_ in ("confidence", "forgotten_domain", "min_real_similarity")}}
    scores = {"domain_head": lambda out, _: out["domain_probs"][:, forgotten_mask].sum(1),
              "knn": lambda _, name: 1.0 - similarity[name]}
    if "p_texture" in real:
        scores["texture"] = lambda out, _: out["p_texture"]
    for name, score in scores.items():
        real_scores, unit_scores = score(real, "real")[correct], score(unit, "unit")
        result[f"curve_{name}"] = [operating_point(real_scores, unit_scores, fs)
                                   for fs in FALSE_SUPPRESSION_GRID]
        result[f"at5_{name}"] = operating_point(real_scores, unit_scores, OPERATING_POINT)
    return result


def run_styles_benchmark(base: TrainConfig, methods: Sequence[str], families: Sequence[str],
                         held_out_families: Sequence[str], held_out_domains: Sequence[str],
                         seeds: Sequence[int], work_dir, reference: bool = True, knn_k: int = 5,
                         texture_zoom: int = 0, texture_artefacts: bool = True) -> Dict:
    """`families`: the rendered pool (empty: all); each of `held_out_families` (a subset) and
    `held_out_domains` is left out in turn. texture_zoom > 0: score the `texture` rule too
    (texture_artefacts: its head also fitted on camera-artefact copies, as `adu export`'s)."""
    from adu_perception.runtime.images import preprocess

    from .stylize import render_batch

    families = resolve_families(families)
    held_out_families = [f for f in families if f in held_out_families]
    clip = load_clip(ClipSpec.from_args(base.clip, base.pretrained, base.model_config))
    started = time.time()
    rows: List[dict] = []
    for seed in seeds:
        real = prepare_data(TrainConfig(**{**base.to_dict(), "seed": seed, "rendered": "off"}),
                            clip.image_size)
        forget, memorize = resolve_domains(real.dataset, base.forget, base.memorize)
        unknown = [d for d in held_out_domains if d not in forget]
        if unknown:
            raise ValueError(f"held-out domain(s) {', '.join(unknown)} are not forgotten domains "
                             f"({', '.join(forget)})")
        memorized_ids = real.dataset.domain_indices(memorize)
        test_classes, test_domains = real.labels("test")
        calibration, cal_samples, _ = load_images(real.dataset.root, real.calibration, clip.image_size,
                                                  base.workers, "load calibration images")
        cal_classes = np.array([s.class_index for s in cal_samples])
        cal_domains = np.array([s.domain_index for s in cal_samples])
        # The open-set bank as `adu export` builds it: the memorised training files decoded at
        # the input size (the trainer keeps them larger, for its random crops).
        bank_images, _, _ = load_images(real.dataset.root,
                                        [s for s in real.train if s.domain_index in memorized_ids],
                                        clip.image_size, base.workers, "load bank images")
        photos = np.isin(test_domains, memorized_ids)
        texture = None
        if texture_zoom:
            texture = _texture_views(real, clip.image_size * texture_zoom, base.workers)
            rendered_zoomed = {f: render_batch(texture["test"][photos], f, seed) for f in families}
            texture["rendered_test"] = rendered_zoomed
            rendered_test = {f: preprocess(list(v), clip.image_size) for f, v in rendered_zoomed.items()}
        else:
            rendered_test = {f: render_batch(real.test_images[photos], f, seed) for f in families}
        units = ([None] if reference else []) + held_out_units(held_out_families, held_out_domains)
        for unit in units:
            for method in methods:
                config = training_config(base, method, unit, families, forget, seed)
                label = "reference" if unit is None else f"{unit['kind']}-{unit['name']}"
                run_dir = Path(work_dir) / f"seed{seed}" / f"{method}-without-{label}"
                data = copy.copy(real)  # the decoded real images are shared, never modified
                if config.rendered != "off":
                    add_rendered_training_data(data, config)
                trained = train(config, run_dir, data=data, clip=clip, progress=False)
                row = _score_run(trained["model"], trained["payload"], clip, data, unit, families,
                                 rendered_test, (calibration, cal_classes, cal_domains), bank_images,
                                 knn_k, texture, texture_zoom, texture_artefacts)
                row.update(seed=seed, method=method, held_out=REFERENCE if unit is None else unit["name"],
                           kind="reference" if unit is None else unit["kind"],
                           train_seconds=trained["payload"].get("train_seconds"))
                rows.append(row)
                _log_row(row)
    return {"rows": rows, "setup": {**{k: v for k, v in base.to_dict().items()
                                       if k not in ("method", "seed", "rendered_families")},
                                    "families": list(families), "held_out_families": held_out_families,
                                    "held_out_domains": list(held_out_domains),
                                    "seeds": list(seeds), "methods": list(methods), "knn_k": knn_k,
                                    "texture_zoom": texture_zoom, "texture_artefacts": texture_artefacts,
                                    "keep_target": 0.95, "operating_point": OPERATING_POINT,
                                    "false_suppression_grid": FALSE_SUPPRESSION_GRID.tolist(),
                                    "seconds": round(time.time() - started, 1)}}


def _texture_views(real: PreparedData, size: int, workers: int) -> dict:
    """The images the texture rule reads, at zoom x the input size: calibration, test, and the
    dataset's training files (for the head's fit)."""
    dataset = real.dataset

    def load(samples, what):
        images, kept, _ = load_images(dataset.root, samples, size, workers, f"load {what} at {size} px")
        if len(kept) != len(samples):
            raise ValueError(f"{len(samples) - len(kept)} {what} image(s) unreadable at {size} px")
        return images

    return {"calibration": load(real.calibration, "calibration images"), "test": load(real.test, "test images"),
            "train": load(real.train, "training images"), "train_domains": real.labels("train")[1]}


def _score_run(model, payload: dict, clip, data: PreparedData, unit, families, rendered_test,
               calibration, bank_images, knn_k, texture: Optional[dict] = None, zoom: int = 0,
               texture_artefacts: bool = True) -> dict:
    """Thresholds on calibration images that never show the unit; rates on the unit."""
    from adu_perception.export.thresholds import choose_thresholds

    from .texture_head import fit_run_head, stem_weight

    names = payload["domain_names"]
    memorized_ids = [names.index(d) for d in payload["memorized_domains"]]
    forgotten_ids = [names.index(d) for d in payload["forgotten_domains"]]
    forgotten_mask = np.isin(np.arange(len(names)), forgotten_ids)
    cal_images, cal_classes, cal_domains = calibration
    seen = np.isin(cal_domains, memorized_ids + forgotten_ids)  # a held-out domain stays unseen
    # plus rendered copies of the calibration photos by the run's families, as `adu export` does
    if texture is None:
        cal_images, cal_classes, cal_domains = with_rendered_copies(
            payload, cal_images[seen], cal_classes[seen], cal_domains[seen])
    else:
        cal_images, cal_zoomed, cal_classes, cal_domains = with_rendered_copies_at_two_sizes(
            payload, cal_images[seen], texture["calibration"][seen], cal_classes[seen], cal_domains[seen])
    test_classes, test_domains = data.labels("test")
    photos = np.isin(test_domains, memorized_ids)
    in_unit = (test_domains == names.index(unit["name"])) if unit is not None and unit["kind"] == "domain" else None
    mean, std = clip.mean, clip.std
    bank = predict(model, np.concatenate([bank_images, bank_images[:, :, ::-1]]), mean, std)["embeddings"]
    cal = predict(model, cal_images, mean, std)
    real = predict(model, data.test_images[photos], mean, std)
    head = None
    if texture is not None:
        head = fit_run_head(payload, stem_weight(clip.model), texture["train"], texture["train_domains"], zoom,
                            camera_artefacts=texture_artefacts)
        cal["p_texture"] = head.probability(cal_zoomed)
        real["p_texture"] = head.probability(texture["test"][photos])
    from adu_perception.runtime.open_set import real_similarity

    cal_similarity = real_similarity(cal["embeddings"], bank, knn_k)
    thresholds = {"domain": choose_thresholds(cal["probs"], cal["domain_probs"], cal_classes, cal_domains,
                                              memorized_ids, forgotten_ids),
                  "open-set": choose_thresholds(cal["probs"], cal["domain_probs"], cal_classes, cal_domains,
                                                memorized_ids, forgotten_ids, real_similarity=cal_similarity)}
    if head is not None:
        thresholds["texture"] = choose_thresholds(cal["probs"], cal["domain_probs"], cal_classes, cal_domains,
                                                  memorized_ids, forgotten_ids, p_texture=cal["p_texture"])
    if in_unit is not None:
        units = {unit["name"]: (data.test_images[in_unit], None if texture is None else texture["test"][in_unit])}
    else:
        units = {f: (rendered_test[f], None if texture is None else texture["rendered_test"][f])
                 for f in families if unit is None or unit["name"] == f}
    per_unit = {}
    for name, (images, zoomed) in units.items():
        outputs = {"real": real, "unit": predict(model, images, mean, std)}
        if head is not None:
            outputs["unit"]["p_texture"] = head.probability(zoomed)
        per_unit[name] = score_rules(outputs, test_classes[photos], thresholds, forgotten_mask, bank, knn_k)
    return {"per_unit": per_unit, "mem_accuracy": float((real["probs"].argmax(1) == test_classes[photos]).mean()),
            "texture_fitted_on": None if head is None else head.fitted_on}


def _log_row(row: dict) -> None:
    for name, rates in row["per_unit"].items():
        texture = (f" | texture: {100 * rates['texture']['suppressed']:5.1f}% / {100 * rates['texture']['kept']:5.1f}%"
                   f", @5% {100 * rates['at5_texture']:5.1f}%") if "texture" in rates else ""
        log.info("seed %d %-9s held out %-32s %-18s open-set: suppressed %5.1f%% kept %5.1f%% | "
                 "domain: %5.1f%% / %5.1f%% | @5%%: head %5.1f%% knn %5.1f%%%s", row["seed"], row["method"],
                 row["held_out"], name, 100 * rates["open-set"]["suppressed"], 100 * rates["open-set"]["kept"],
                 100 * rates["domain"]["suppressed"], 100 * rates["domain"]["kept"],
                 100 * rates["at5_domain_head"], 100 * rates["at5_knn"], texture)


def _rates(rates: dict) -> Dict[str, float]:
    values = {"sup": rates["open-set"]["suppressed"], "kept": rates["open-set"]["kept"],
              "dsup": rates["domain"]["suppressed"], "dkept": rates["domain"]["kept"],
              "head5": rates["at5_domain_head"], "knn5": rates["at5_knn"]}
    if "texture" in rates:
        values.update(tsup=rates["texture"]["suppressed"], tkept=rates["texture"]["kept"],
                      tex5=rates["at5_texture"])
    return values


def summary_table(report: Dict) -> str:
    """One row per held-out unit (mean over seeds), methods side by side, then the means over
    drawn families, print families (a photograph in a frame or on a screen) and all families."""
    from .stylize import FAMILIES, PRINT_FAMILIES

    methods = report["setup"]["methods"]
    texture = bool(report["setup"].get("texture_zoom"))
    cells: Dict[tuple, Dict[str, List[float]]] = {}
    for row in report["rows"]:
        setting = "reference" if row["kind"] == "reference" else "left out"
        for name, rates in row["per_unit"].items():
            entry = cells.setdefault((setting, name, row["method"]), {})
            for key, value in _rates(rates).items():
                entry.setdefault(key, []).append(100 * value)
    columns = ["open-set sup / kept", "domain rule sup / kept", "@5% head / kNN"]
    columns += ["texture rule sup / kept", "@5% texture"] if texture else []
    header = ("| trained without | held-out images | "
              + " | ".join(f"{m}: {c}" for m in methods for c in columns) + " |")
    lines = [header, "|---" * (2 + len(columns) * len(methods)) + "|"]
    order = {name: i for i, name in enumerate(FAMILIES)}
    for setting in ("reference", "left out"):
        units = sorted({n for s, n, _ in cells if s == setting}, key=lambda n: (order.get(n, 99), n))
        families = [n for n in units if n in order]
        groups = [(n, [n]) for n in units]
        if len(families) > 1:
            drawn = [n for n in families if n not in PRINT_FAMILIES]
            printed = [n for n in families if n in PRINT_FAMILIES]
            groups += [(f"mean, {label} ({len(members)})", members)
                       for label, members in (("drawn", drawn), ("print", printed), ("all families", families))
                       if members]
        for label, members in groups:
            row = ["every family (reference)" if setting == "reference" else "that one", label]
            for method in methods:
                found = [cells[(setting, n, method)] for n in members if (setting, n, method) in cells]
                if not found:
                    row += [""] * len(columns)
                    continue
                values = {k: np.mean([np.mean(entry[k]) for entry in found]) for k in found[0]}
                row += [f"{values['sup']:.1f} / {values['kept']:.1f}", f"{values['dsup']:.1f} / {values['dkept']:.1f}",
                        f"{values['head5']:.1f} / {values['knn5']:.1f}"]
                if texture:
                    row += [f"{values['tsup']:.1f} / {values['tkept']:.1f}", f"{values['tex5']:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    seeds = ", ".join(map(str, report["setup"]["seeds"]))
    return "\n".join(lines) + (f"\n\nSeeds {seeds}; % of held-out images suppressed / % of correctly "
                               f"classified real test photos still reported (thresholds chosen on "
                               f"calibration images to keep 95 %). @5%: held-out suppression when "
                               f"5 % of those photos are suppressed, by one score.")


def merge_reports(reports: Sequence[Dict]) -> Dict:
    """Reports of the same set-up run in parallel (e.g. different held-out families) as one."""
    if not reports:
        raise ValueError("no reports to merge")
    setup = dict(reports[0]["setup"])
    for key in ("held_out_families", "held_out_domains", "seeds"):
        setup[key] = sorted({v for r in reports for v in r["setup"].get(key, [])})
    setup["seconds"] = round(sum(r["setup"]["seconds"] for r in reports), 1)
    return {"rows": [row for r in reports for row in r["rows"]], "setup": setup}


def write_report(report: Dict, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(summary_table(report) + "\n")
    _plot_curves(report, out.with_suffix(".png"))
    return out


def _plot_curves(report: Dict, path: Path) -> None:
    from .plots import plt

    grid = 100 * np.array(report["setup"]["false_suppression_grid"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in report["setup"]["methods"]:
        for score, style in (("domain_head", "--"), ("knn", "-"), ("texture", ":")):
            curves = [rates[f"curve_{score}"] for row in report["rows"] if row["method"] == method
                      and row["kind"] != "reference" for rates in row["per_unit"].values()
                      if f"curve_{score}" in rates]
            if curves:
                ax.plot(grid, 100 * np.mean(curves, 0), style, label=f"{method}: {score} (held out, mean)")
    ax.axvline(100 * OPERATING_POINT, color="#999", lw=0.8)
    ax.set_xlabel("correct real photos suppressed (%)")
    ax.set_ylabel("held-out illustrations suppressed (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
