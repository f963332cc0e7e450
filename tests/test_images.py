"""runtime/images.py: ROS encodings -> RGB (incl. padded rows), YUV byte orders, compressed
frames, malformed input, preprocessing and regions."""
import array

import cv2
import numpy as np
import pytest

from adu_perception.runtime import images
from adu_perception.runtime.images import ImageFormatError, to_rgb
from ros_conftest_helpers import expected_rgb, raw_frame

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "uyvy", "yuyv", "yuv422_yuy2"]


def gradient(width=6, height=4):
    """A frame where every pixel differs, so swapped channels or rows show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 40 % 256, y * 60 % 256, (x + y) * 25 % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("padding", [0, 7])
def test_every_encoding_decodes_to_rgb_with_and_without_row_padding(encoding, padding):
    rgb = gradient()
    data, step = raw_frame(rgb, encoding, padding)
    assert step == 6 * {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 2) + padding
    out = to_rgb(data, 6, 4, step, encoding)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        np.testing.assert_array_equal(out, rgb)  # lossless encodings round-trip exactly
    else:
        np.testing.assert_array_equal(out, expected_rgb(rgb, encoding))
        # and close to the original colours (mono8 keeps luma; 4:2:2 shares chroma per pair)
        reference = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) \
            if encoding == "mono8" else rgb
        assert np.abs(out.astype(int) - reference).mean() < 25


def test_buffer_types_from_ros_and_mcap_are_accepted():
    rgb = gradient()
    data, step = raw_frame(rgb, "bgr8", 2)
    for buffer in (data, bytearray(data), array.array("B", data), np.frombuffer(data, np.uint8),
                   list(data)):
        np.testing.assert_array_equal(to_rgb(buffer, 6, 4, step, "bgr8"), rgb)


def bt601_rgb(y, u, v):
    """Limited-range BT.601 YUV -> RGB, the conversion camera YUV 4:2:2 uses."""
    c, d, e = y - 16, u - 128, v - 128
    return np.clip([1.164 * c + 1.596 * e, 1.164 * c - 0.391 * d - 0.813 * e, 1.164 * c + 2.018 * d],
                   0, 255)


def test_yuyv_and_uyvy_byte_orders_give_the_known_colour():
    y, u, v = 86, 107, 202  # a saturated red in BT.601
    want = bt601_rgb(y, u, v)
    yuyv = bytes([y, u, y, v] * 2)  # 4x1 pixels: Y0 U Y1 V per pair
    uyvy = bytes([u, y, v, y] * 2)  # ROS yuv422: U Y0 V Y1 per pair
    for data, encoding in ((yuyv, "yuyv"), (yuyv, "yuv422_yuy2"), (uyvy, "uyvy"), (uyvy, "yuv422")):
        out = to_rgb(data, 4, 1, 8, encoding)
        assert np.abs(out.astype(float) - want).max() <= 3, (encoding, out[0, 0], want)
        assert out[0, 0, 0] > 180 and out[0, 0, 1] < 60 and out[0, 0, 2] < 60  # red
    # Reading one byte order as the other gives a visibly wrong colour.
    wrong = to_rgb(uyvy, 4, 1, 8, "yuyv")
    assert np.abs(wrong.astype(float) - want).max() > 60


@pytest.mark.parametrize("args, problem", [
    ((b"\0" * 48, 4, 4, 12, "bayer_rggb8"), "unsupported encoding"),
    ((b"\0" * 48, 4, 4, 12, "16UC1"), "unsupported encoding"),
    ((b"\0" * 47, 4, 4, 12, "rgb8"), "data holds 47 bytes"),
    ((b"\0" * 60, 4, 4, 12, "rgb8"), "data holds 60 bytes"),
    ((b"\0" * 40, 4, 4, 10, "rgb8"), "step 10 is shorter"),
    ((b"", 0, 0, 0, "rgb8"), "empty frame"),
    ((b"\0" * 12, 3, 2, 6, "yuyv"), "even width"),
])
def test_malformed_frames_raise_image_format_error(args, problem):
    with pytest.raises(ImageFormatError, match=problem):
        to_rgb(*args)


def test_compressed_jpeg_and_png_decode_and_garbage_is_refused():
    rgb = gradient(32, 24)
    png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    np.testing.assert_array_equal(images.decode_compressed(png), rgb)
    smooth = np.zeros((24, 32, 3), np.uint8)
    smooth[:, :16] = (200, 40, 30)  # two flat colours: JPEG keeps them closely
    smooth[:, 16:] = (20, 60, 220)
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    assert np.abs(images.decode_compressed(jpeg).astype(int) - smooth).mean() < 6
    with pytest.raises(ImageFormatError, match="cannot decode"):
        images.decode_compressed(b"not an image at all")
    with pytest.raises(ImageFormatError, match="empty"):
        images.decode_compressed(b"")


def test_training_loader_sees_the_pixels_the_node_sees(tmp_path):
    from adu_perception.training.data import Sample, load_images

    rng = np.random.default_rng(0)
    shapes = ((48, 64, 3), (480, 640, 3), (64, 20, 3), (96, 96, 3))
    originals, samples = [], []
    for i, shape in enumerate(shapes):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / "photo" / "car").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "photo" / "car" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        originals.append(image)
        samples.append(Sample(f"photo/car/{i}.png", 0, 0))
    loaded, kept, skipped = load_images(tmp_path, samples, 32, workers=1)
    assert len(kept) == len(shapes) and not skipped
    np.testing.assert_array_equal(loaded, images.preprocess(originals, 32))
    assert loaded.shape == (len(shapes), 32, 32, 3) and loaded.dtype == np.uint8


def test_center_crop_keeps_the_middle():
    image = np.zeros((32, 96, 3), np.uint8)
    image[:, 32:64] = 255  # only the middle third is white
    out = images.resize_center_crop(image, 32)
    assert out.min() == 255


def test_regions_grid_and_clipping():
    image = gradient(100, 60)
    assert images.regions_from_flat([0, 0, 10, 10, 50, 20, 30, 40]) == [(0, 0, 10, 10), (50, 20, 30, 40)]
    with pytest.raises(ValueError, match="4 integers each"):
        images.regions_from_flat([0, 0, 10])
    with pytest.raises(ValueError, match="width, height > 0"):
        images.regions_from_flat([0, 0, 0, 10])
    tiles = images.grid_regions(100, 60, 2, 3)
    assert len(tiles) == 6 and sum(w * h for _, _, w, h in tiles) == 100 * 60
    assert tiles[-1] == (66, 30, 34, 30)
    crops = images.crop_regions(image, [(90, 50, 30, 30)])  # clipped to the image
    (region, crop), = crops
    assert region == (90, 50, 10, 10)
    np.testing.assert_array_equal(crop, image[50:60, 90:100])
    assert images.crop_regions(image, None)[0][0] == (0, 0, 100, 60)
    with pytest.raises(ImageFormatError, match="outside"):
        images.crop_regions(image, [(200, 0, 10, 10)])
