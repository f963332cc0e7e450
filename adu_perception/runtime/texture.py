"""Texture score of an item: is its fine texture that of a camera photo? (docs/bundle.md)

The domain head sees the crop at the model's input size, where an unseen print or drawing
style can look like a photo. This score looks at the same crop at `zoom` times that size,
cut into tiles of the model's input size: for each tile, the per-channel mean and standard
deviation of the frozen image model's first layer (the patch-embedding convolution); a
logistic head fitted on the run's memorised training photos against its illustrations
(forgotten domains and rendered families) turns them into a logit; an item's score is the
sigmoid of its tiles' mean logit. On the proxy, at 5 % false suppression of correct real
photos, it catches 36 % of a rendered family left out of the run, against 21 % for ADU's
domain head (`adu benchmark styles --texture-zoom 2`, seeds 1-3; 41 % for a head fitted
without the camera-artefact copies).

numpy only (no torch): a patchify convolution (stride = kernel) is one matrix product. The
head is not in the ONNX graph because it reads a different resolution of the crop.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STEM_STATISTICS = "stem_statistics_logistic"
SCORES = (STEM_STATISTICS,)  # manifest texture.score values this runtime can compute
ARRAYS = ("stem_weight", "pixel_mean", "pixel_std", "feature_mean", "feature_std", "coef", "intercept")


def tiles(images: np.ndarray, tile: int) -> np.ndarray:
    """[N, S, S, 3] -> [N * (S / tile)^2, tile, tile, 3], row by row within each image."""
    n, size = len(images), images.shape[1]
    per_side = size // tile
    return (images.reshape(n, per_side, tile, per_side, tile, 3).transpose(0, 1, 3, 2, 4, 5)
            .reshape(n * per_side * per_side, tile, tile, 3))


def stem_statistics(images: np.ndarray, stem_weight: np.ndarray, pixel_mean, pixel_std) -> np.ndarray:
    """uint8 [N, T, T, 3] tiles -> float32 [N, 2C]: per-channel mean and std over the patches of
    the convolution stem_weight [C, 3, P, P] (stride P, no bias) applied to the normalised image
    ((x / 255 - pixel_mean) / pixel_std), exactly as the image model's first layer sees it."""
    channels, _, patch, _ = stem_weight.shape
    n, size = len(images), images.shape[1]
    if size % patch:
        raise ValueError(f"tile size {size} is not a multiple of the patch size {patch}")
    # Fold the normalisation into the weights: W * ((x/255 - m)/s) = (W/(255 s)) * x - W * m/s.
    scale = 1.0 / (255.0 * np.asarray(pixel_std, np.float64))
    weight = stem_weight.astype(np.float64) * scale[None, :, None, None]
    bias = -(stem_weight.astype(np.float64) * (np.asarray(pixel_mean) / np.asarray(pixel_std))
             [None, :, None, None]).sum(axis=(1, 2, 3))
    per_side = size // patch
    patches = (images.reshape(n, per_side, patch, per_side, patch, 3).transpose(0, 1, 3, 5, 2, 4)
               .reshape(n, per_side * per_side, 3 * patch * patch).astype(np.float32))
    out = patches @ weight.reshape(channels, -1).T.astype(np.float32) + bias.astype(np.float32)
    return np.concatenate([out.mean(axis=1), out.std(axis=1)], axis=1)


@dataclass(frozen=True)
class TextureHead:
    """The bundle's texture score: the stem, the fitted head, and the crop geometry."""
    zoom: int                      # the crop is read at zoom * tile px ...
    tile: int                      # ... and cut into zoom x zoom tiles of the model's input size
    stem_weight: np.ndarray = field(repr=False)   # float32 [C, 3, P, P]
    pixel_mean: np.ndarray = field(repr=False)    # [3]
    pixel_std: np.ndarray = field(repr=False)     # [3]
    feature_mean: np.ndarray = field(repr=False)  # [2C]: standardisation of the statistics
    feature_std: np.ndarray = field(repr=False)   # [2C]
    coef: np.ndarray = field(repr=False)          # [2C]
    intercept: float = 0.0
    fitted_on: str = ""

    @property
    def input_size(self) -> int:
        return self.zoom * self.tile

    def tile_logits(self, images: np.ndarray) -> np.ndarray:
        """[N, zoom^2] logits of every tile (higher = more illustrated)."""
        size = self.input_size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != (size, size, 3):
            raise ValueError(f"the texture score needs uint8 [N, {size}, {size}, 3], got "
                             f"{getattr(images, 'dtype', type(images).__name__)} "
                             f"{getattr(images, 'shape', None)}")
        features = stem_statistics(tiles(images, self.tile), self.stem_weight, self.pixel_mean, self.pixel_std)
        logits = ((features - self.feature_mean) / self.feature_std) @ self.coef + self.intercept
        return logits.reshape(len(images), self.zoom * self.zoom)

    def probability(self, images: np.ndarray) -> np.ndarray:
        """[N] p_texture in (0, 1): sigmoid of the mean tile logit."""
        if len(images) == 0:
            return np.zeros(0, np.float64)
        return 1.0 / (1.0 + np.exp(-self.tile_logits(images).astype(np.float64).mean(axis=1)))

    def save(self, path) -> Path:
        np.savez(path, **{name: np.asarray(getattr(self, name), np.float32) for name in ARRAYS})
        return Path(path)

    @classmethod
    def load(cls, path, zoom: int, tile: int, fitted_on: str = "") -> "TextureHead":
        """Read the arrays written by `save`; ValueError names what is wrong with them."""
        with np.load(path, allow_pickle=False) as stored:
            missing = [name for name in ARRAYS if name not in stored]
            if missing:
                raise ValueError(f"{path} lacks arrays {', '.join(missing)}")
            arrays = {name: stored[name].astype(np.float32) for name in ARRAYS}
        weight = arrays["stem_weight"]
        if weight.ndim != 4 or weight.shape[1] != 3 or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"{path}: stem_weight has shape {weight.shape}, expected [C, 3, P, P]")
        if tile % weight.shape[2]:
            raise ValueError(f"{path}: tile {tile} is not a multiple of the stem's patch {weight.shape[2]}")
        width = 2 * weight.shape[0]
        for name, shape in (("pixel_mean", (3,)), ("pixel_std", (3,)), ("feature_mean", (width,)),
                            ("feature_std", (width,)), ("coef", (width,)), ("intercept", ())):
            if arrays[name].shape != shape:
                raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError(f"{path} holds non-finite values (NaN or inf)")
        if (arrays["feature_std"] <= 0).any() or (arrays["pixel_std"] <= 0).any():
            raise ValueError(f"{path}: feature_std and pixel_std must be positive")
        return cls(zoom=int(zoom), tile=int(tile), intercept=float(arrays.pop("intercept")),
                   fitted_on=fitted_on, **arrays)
