"""PNG plots: per-domain accuracy before/after unlearning, and a 2-D projection of image
features coloured by domain (entangled before, separated after)."""
from pathlib import Path
from typing import Dict, Sequence

import matplotlib

matplotlib.use("Agg")  # no screen on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_domain_accuracy(before: Dict[str, float], after: Dict[str, float],
                         forgotten: Sequence[str], path, title: str) -> Path:
    domains = list(after)
    x = np.arange(len(domains))
    fig, ax = plt.subplots(figsize=(1.6 * len(domains) + 2, 3.6))
    ax.bar(x - 0.2, [before[d] for d in domains], 0.4, label="zero-shot CLIP", color="#9aa5b1")
    ax.bar(x + 0.2, [after[d] for d in domains], 0.4, label="after unlearning", color="#2f6fdf")
    ax.set_xticks(x, [f"{d}\n({'forget' if d in forgotten else 'keep'})" for d in domains])
    ax.set_ylabel("class accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def pca_2d(features: np.ndarray) -> np.ndarray:
    centred = features - features.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def plot_feature_projection(before: np.ndarray, after: np.ndarray, domains: np.ndarray,
                            domain_names: Sequence[str], path, max_per_domain: int = 150,
                            seed: int = 0) -> Path:
    """PCA of normalised image embeddings, zero-shot vs after unlearning, one colour per domain."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(domains == d))[:max_per_domain]
                           for d in range(len(domain_names))])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, features, title in ((axes[0], before, "zero-shot CLIP"), (axes[1], after, "after unlearning")):
        points = pca_2d(features[keep])
        for d, name in enumerate(domain_names):
            mask = domains[keep] == d
            ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.7, label=name)
        ax.set_title(f"image features, PCA ({title})")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
