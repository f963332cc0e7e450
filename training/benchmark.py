"""`adu benchmark unlearning`: the paper's protocol over every forget combination."""
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence

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
                             work_dir) -> Dict:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    started = time.time()
    clip = load_clip(ClipSpec.from_args(base.clip, base.pretrained, base.model_config))
    data = prepare_data(base, clip.image_size)  # decoded once, shared by every run
    classes, domains = data.labels("test")
    names = data.dataset.domains
    results: Dict[str, Dict[str, dict]] = {m: {} for m in methods}
    zero_shot_outputs = None
    for size in forget_sizes:
        for forget in forget_combinations(names, size):
            memorize = [d for d in names if d not in forget]
            for method in methods:
                config = TrainConfig(**{**base.to_dict(), "method": method, "forget": forget,
                                        "memorize": memorize})
                run_dir = Path(work_dir) / f"{method}-forget-{'+'.join(forget)}"
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
                results[method].setdefault(str(size), {"combos": []})["combos"].append(combo)
                log.info("%-9s forget=%-28s Mem %6.2f For %6.2f H %6.2f", method, ",".join(forget),
                         combo["mem"], combo["for"], combo["h"])
    for method in methods:
        for entry in results[method].values():
            entry.update(average_combinations(entry["combos"]))
    return {"results": results,
            "setup": {**{k: v for k, v in base.to_dict().items() if k not in ("forget", "memorize", "method")},
                      "domains": names, "classes": data.dataset.classes, "n_test": int(len(classes)),
                      "n_train": len(data.train), "seconds": round(time.time() - started, 1)}}


def results_table(report: Dict) -> str:
    sizes = sorted({k for per_method in report["results"].values() for k in per_method}, key=int)
    header = "| method | " + " | ".join(f"|D_forget|={k}: Mem / For / H" for k in sizes) + " |"
    lines = [header, "|---" * (1 + len(sizes)) + "|"]
    for method, per_size in report["results"].items():
        cells = [f"{per_size[k]['mem']:.2f} / {per_size[k]['for']:.2f} / **{per_size[k]['h']:.2f}**"
                 for k in sizes]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: Dict, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(results_table(report) + "\n")
    return out
