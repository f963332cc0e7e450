"""`adu benchmark unlearning`: the paper's protocol over every forget combination."""
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .clip_loader import ClipSpec, load_clip
from .config import METHODS, TrainConfig
from .evaluate import predict, score, zero_shot_model
from .metrics import average_combinations
from .trainer import prepare_data, train

log = logging.getLogger(__name__)


def forget_combinations(domains: Sequence[str], size: int) -> List[List[str]]:
    if not 1 <= size < len(domains):
        raise ValueError(f"|D_forget| = {size} impossible with {len(domains)} domains "
                         f"(at least one must be memorized)")
    return [list(c) for c in itertools.combinations(domains, size)]


def run_unlearning_benchmark(base: TrainConfig, methods: Sequence[str], forget_sizes: Sequence[int],
                             work_dir, seeds: Sequence[int] = ()) -> Dict:
    """Every method on every forget combination of each size, for each seed (the few-shot
    draw, the prompt initialisation and the batches all follow the seed).

    results[method][size] = {"per_seed": {seed: {"combos": [...], mem, for, h}}, mem, for, h
    (means over seeds of the per-seed averages over combinations), h_min, h_max (spread of
    the per-seed H)}.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    seeds = list(seeds) or [base.seed]
    started = time.time()
    clip = load_clip(ClipSpec.from_args(base.clip, base.pretrained, base.model_config))
    results: Dict[str, Dict[str, dict]] = {m: {} for m in methods}
    run_seconds: Dict[str, List[float]] = {m: [] for m in methods}
    for seed in seeds:
        seeded = TrainConfig(**{**base.to_dict(), "seed": seed})
        data = prepare_data(seeded, clip.image_size)  # decoded once per seed, shared by every run
        classes, domains = data.labels("test")
        names = data.dataset.domains
        zero_shot_outputs = None
        for size in forget_sizes:
            for forget in forget_combinations(names, size):
                memorize = [d for d in names if d not in forget]
                for method in methods:
                    run_started = time.time()
                    config = TrainConfig(**{**seeded.to_dict(), "method": method, "forget": forget,
                                            "memorize": memorize})
                    run_dir = Path(work_dir) / f"seed{seed}" / f"{method}-forget-{'+'.join(forget)}"
                    if method == "zeroshot":
                        if zero_shot_outputs is None:
                            trained = train(config, run_dir, data=data, clip=clip)
                            zero_shot_outputs = predict(zero_shot_model(trained["model"]), data.test_images,
                                                        clip.mean, clip.std, desc="evaluate zeroshot")
                        outputs = zero_shot_outputs
                    else:
                        trained = train(config, run_dir, data=data, clip=clip)
                        outputs = predict(trained["model"], data.test_images, clip.mean, clip.std,
                                          desc=f"evaluate {method}")
                    combo = score(outputs, classes, domains, names, memorize, forget)
                    combo["forget"] = forget
                    run_seconds[method].append(time.time() - run_started)
                    per_seed = results[method].setdefault(str(size), {"per_seed": {}})["per_seed"]
                    per_seed.setdefault(str(seed), {"combos": []})["combos"].append(combo)
                    log.info("seed %d %-12s forget=%-28s Mem %6.2f For %6.2f H %6.2f", seed, method,
                             ",".join(forget), combo["mem"], combo["for"], combo["h"])
    for method in methods:
        for entry in results[method].values():
            for seed_entry in entry["per_seed"].values():
                seed_entry.update(average_combinations(seed_entry["combos"]))
            entry.update(average_over_seeds(list(entry["per_seed"].values())))
    return {"results": results,
            "setup": {**{k: v for k, v in base.to_dict().items()
                         if k not in ("forget", "memorize", "method", "seed")},
                      "seeds": seeds, "domains": names, "classes": data.dataset.classes,
                      "n_test": int(len(classes)), "n_train": len(data.train),
                      "n_calibration": len(data.calibration),
                      "seconds": round(time.time() - started, 1),
                      "mean_run_seconds": {m: round(sum(v) / len(v), 1) for m, v in run_seconds.items() if v}}}


def average_over_seeds(per_seed: Sequence[dict]) -> dict:
    """Mean of each seed's (combination-averaged) Mem, For and H; H's range over seeds."""
    hs = [entry["h"] for entry in per_seed]
    return {"mem": float(np.mean([e["mem"] for e in per_seed])),
            "for": float(np.mean([e["for"] for e in per_seed])),
            "h": float(np.mean(hs)), "h_min": float(min(hs)), "h_max": float(max(hs))}


def results_table(report: Dict) -> str:
    sizes = sorted({k for per_method in report["results"].values() for k in per_method}, key=int)
    seeds = report["setup"].get("seeds", [])
    spread = len(seeds) > 1
    header = "| method | " + " | ".join(f"|D_forget|={k}: Mem / For / H" for k in sizes) + " |"
    lines = [header, "|---" * (1 + len(sizes)) + "|"]
    for method, per_size in report["results"].items():
        cells = []
        for k in sizes:
            entry = per_size[k]
            cell = f"{entry['mem']:.2f} / {entry['for']:.2f} / **{entry['h']:.2f}**"
            if spread:
                cell += f" ({entry['h_min']:.2f}-{entry['h_max']:.2f})"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    note = (f"Mean over seeds {', '.join(map(str, seeds))} of the H averaged over combinations; "
            f"range over seeds in brackets." if spread else f"Seed {', '.join(map(str, seeds))}.")
    return "\n".join(lines) + "\n\n" + note


def write_report(report: Dict, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(results_table(report) + "\n")
    return out
