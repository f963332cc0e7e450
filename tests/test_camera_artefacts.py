"""Camera artefacts for the texture head's fit (training.camera_artefacts)."""
import numpy as np
import pytest

from adu_perception.training.camera_artefacts import ARTEFACTS, apply_artefact, camera_copies


def scene(n=3, size=40, seed=0):
    """Photo-like test images: a smooth gradient, a block and some noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, size)[None, :, None, None] + np.zeros((n, size, size, 3))
    ramp[:, size // 4: size // 2, size // 4: size // 2] = 230
    return np.clip(ramp + rng.normal(0, 6, ramp.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_each_artefact_is_seeded_keeps_shape_and_changes_the_image(artefact):
    image = scene(1)[0]
    first = apply_artefact(image, artefact, np.random.default_rng(3))
    again = apply_artefact(image, artefact, np.random.default_rng(3))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - image).mean() > 0.2


def test_an_unknown_artefact_is_named():
    with pytest.raises(ValueError, match="unknown camera artefact 'vignette'"):
        apply_artefact(scene(1)[0], "vignette", np.random.default_rng(0))


def test_copies_hold_every_image_once_per_artefact_in_order():
    images = scene(3)
    copies = camera_copies(images, seed=5)
    assert copies.shape == (len(ARTEFACTS) * 3, *images.shape[1:]) and copies.dtype == np.uint8
    assert np.array_equal(copies, camera_copies(images, seed=5))
    assert not np.array_equal(copies, camera_copies(images, seed=6))
    # the JPEG block comes first: each copy is close to its own source image, not another one
    for k in range(3):
        errors = [np.abs(copies[k].astype(int) - images[j]).mean() for j in range(3)]
        assert int(np.argmin(errors)) == k
    assert camera_copies(images[:0], seed=0).shape == (0, *images.shape[1:])
