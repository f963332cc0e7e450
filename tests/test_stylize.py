"""Illustration renderers (training/stylize.py) and `adu stylize`: shapes, determinism,
input checks, folder rendering with a corrupt file, the CLI. Small generated images only."""
import cv2
import numpy as np
import pytest

from adu_perception.cli import main
from adu_perception.demo.world import render_object
from adu_perception.training.stylize import (DRAWN_FAMILIES, FAMILIES, PRINT_FAMILIES, contact_sheet,
                                             render, render_batch, stylize_folder)


def _photo(cls="car", size=48, seed=0):
    return render_object(cls, "photo", np.random.default_rng(seed), size=size)


@pytest.fixture(scope="module")
def odd_images():
    square = _photo("bus", 48)
    return [square, cv2.resize(square, (37, 53)), cv2.resize(square, (16, 16))]


def test_family_lists():
    assert FAMILIES == ("halftone_print", "flat_vector", "line_ink", "painterly", "comic",
                        "pictogram", "screen", "billboard_print")
    assert PRINT_FAMILIES == ("billboard_print", "screen")
    assert set(DRAWN_FAMILIES) | set(PRINT_FAMILIES) == set(FAMILIES)
    assert not set(DRAWN_FAMILIES) & set(PRINT_FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_render_shape_determinism_and_change(family, odd_images):
    for image in odd_images:
        out = render(image, family, 3)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, render(image, family, 3))
        assert np.array_equal(out, render(image, family, [3]))  # sequence seeds work too
        assert np.abs(out.astype(float) - image).mean() > 2.0


def test_seed_changes_the_look():
    image = _photo("pedestrian", 64)
    changed = [f for f in FAMILIES if not np.array_equal(render(image, f, 0), render(image, f, 1))]
    assert len(changed) >= 6, changed


def test_render_batch_uses_per_index_seeds():
    images = np.stack([_photo("car", 32, 0), _photo("truck", 32, 1), _photo("bicycle", 32, 2)])
    batch = render_batch(images, "comic", 7)
    assert batch.shape == images.shape and batch.dtype == np.uint8
    for i in range(len(images)):
        assert np.array_equal(batch[i], render(images[i], "comic", [7, i]))
    assert np.array_equal(render_batch(images[1:], "comic", 7)[0], render(images[1], "comic", [7, 0]))


def test_bad_inputs_raise_value_error():
    image = _photo()
    with pytest.raises(ValueError, match="halftone_print"):
        render(image, "oil_on_velvet", 0)
    with pytest.raises(ValueError, match="uint8"):
        render(image.astype(np.float32), "comic", 0)
    with pytest.raises(ValueError, match="HxWx3"):
        render(image[..., 0], "comic", 0)
    with pytest.raises(ValueError, match="at least"):
        render(image[:8, :8], "comic", 0)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        render_batch(image, "comic", 0)


def _write_tree(root):
    for domain, cls, k in [("photo", "car", 0), ("photo", "car", 1), ("photo", "bus", 2),
                           ("sketch", "car", 3)]:
        folder = root / domain / cls
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{k}.png"), _photo(cls, 40, k)[..., ::-1])
    (root / "photo" / "bus" / "broken.jpg").write_bytes(b"\x00garbage, not a jpeg" * 8)
    return root


def test_stylize_folder_layout_and_corrupt_file(tmp_path):
    src = _write_tree(tmp_path / "src")
    counts = stylize_folder(src, tmp_path / "out", ["screen", "pictogram"], ["photo"], seed=0, size=32)
    assert counts == {"images": 3, "skipped": 1, "written": {"screen": 3, "pictogram": 3}}
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == [f"{f}/{c}/{s}.png" for f in ("pictogram", "screen")
                       for c, s in (("bus", "img2"), ("car", "img0"), ("car", "img1"))]
    assert cv2.imread(str(tmp_path / "out/screen/car/img0.png")).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="unknown family"):
        stylize_folder(src, tmp_path / "out2", ["nope"], ["photo"], seed=0)


def test_images_sharing_a_stem_keep_their_own_output_file(tmp_path):
    src = _write_tree(tmp_path / "src")
    cv2.imwrite(str(src / "sketch" / "car" / "img0.png"), _photo("car", 40, 5)[..., ::-1])  # photo's stem
    cv2.imwrite(str(src / "photo" / "car" / "img0.bmp"), _photo("car", 40, 6)[..., ::-1])  # other suffix
    counts = stylize_folder(src, tmp_path / "out", ["screen"], ["photo", "sketch"], seed=0, size=32)
    written = sorted(p.name for p in (tmp_path / "out" / "screen" / "car").iterdir())
    assert counts["written"]["screen"] == counts["images"] == len(written) + 1  # + the bus image
    assert {"img0.png", "photo-img0-png.png", "sketch-img0-png.png"} <= set(written)


def test_contact_sheet_grid():
    sheet = contact_sheet([_photo("car", 40), _photo("bus", 40, 1)], ["comic", "screen"], 0, tile=48)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * 48 + 4 * 4
    assert sheet.shape[0] > 2 * 48 and (sheet[0] == 255).all()


def test_cli_stylize(tmp_path, capsys):
    src = _write_tree(tmp_path / "src")
    out, sheet = tmp_path / "out", tmp_path / "sheet.png"
    assert main(["stylize", "--data", str(src), "--out", str(out), "--families", "comic,line_ink",
                 "--size", "32", "--contact-sheet", str(sheet)]) == 0
    assert len(list((out / "comic").rglob("*.png"))) == 3 and sheet.is_file()
    assert "line_ink: 3 images" in capsys.readouterr().out
    assert main(["stylize", "--data", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["stylize", "--data", str(src), "--out", str(tmp_path / "new"), "--families", "bogus"]) == 2
    # an --out that already holds images is not merged into by accident
    assert main(["stylize", "--data", str(src), "--out", str(out), "--families", "comic"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["stylize", "--data", str(src), "--out", str(out), "--families", "comic", "--force"]) == 0
    # a sheet name OpenCV cannot write is refused before any image is rendered
    assert main(["stylize", "--data", str(src), "--out", str(tmp_path / "out3"),
                 "--contact-sheet", str(tmp_path / "sheet")]) == 2
    assert "name an image file" in capsys.readouterr().err and not (tmp_path / "out3").exists()
