"""One-class "real-likeness" of an item: how close its embedding lies to a bank of embeddings
of the memorised (real) domains, after UnivFD (Ojha et al., CVPR 2023: nearest neighbours on
frozen CLIP features). A classifier trained on real vs known illustration domains calls an
unseen style "real"; this score stays low for anything that looks like no memorised image.

numpy only (no torch): used by the export stage (threshold choice) and the runtime alike.
"""
from dataclasses import dataclass, field

import numpy as np

KNN_COSINE = "knn_cosine"
SCORES = (KNN_COSINE,)  # manifest open_set.score values this runtime can compute


def unit_rows(x) -> np.ndarray:
    """Rows scaled to length 1 (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def real_similarity(embeddings, bank, k: int) -> np.ndarray:
    """[N]: mean cosine similarity of each embedding [N, E] to its k nearest rows of bank [M, E]
    (k clipped to M). Both are re-normalised, so a float16 bank or a slightly off graph output
    still gives cosines in [-1, 1]."""
    embeddings, bank = np.asarray(embeddings), np.asarray(bank)
    if embeddings.ndim != 2 or bank.ndim != 2 or embeddings.shape[1] != bank.shape[1]:
        raise ValueError(f"need embeddings [N, E] and bank [M, E] with the same E, got "
                         f"{embeddings.shape} and {bank.shape}")
    if len(bank) == 0:
        raise ValueError("the memory bank is empty")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = min(int(k), len(bank))
    if len(embeddings) == 0:
        return np.zeros(0, np.float64)
    cosines = unit_rows(embeddings) @ unit_rows(bank).T  # [N, M]
    nearest = np.partition(cosines, len(bank) - k, axis=1)[:, len(bank) - k:]
    return nearest.astype(np.float64).mean(axis=1)


@dataclass(frozen=True)
class OpenSet:
    """A bundle's open-set score: which score, its parameters and the bank (docs/bundle.md)."""
    score: str                # "knn_cosine"
    k: int
    bank: np.ndarray = field(repr=False)  # float32 [M, E] as stored (scores re-normalise)
    bank_file: str = "memory_bank.npy"
    bank_sha256: str = ""
    bank_from: str = ""

    @property
    def n_bank(self) -> int:
        return len(self.bank)

    def similarity(self, embeddings) -> np.ndarray:
        """[N] real-likeness of graph embeddings [N, E]; higher = more like the bank."""
        if self.score == KNN_COSINE:
            return real_similarity(embeddings, self.bank, self.k)
        raise ValueError(f"unknown open-set score {self.score!r} (known: {', '.join(SCORES)})")
