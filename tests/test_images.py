"""runtime/images.py: ROS encodings -> RGB (incl. padded rows), YUV byte orders, compressed
frames, malformed input, preprocessing and regions."""
import array
import subprocess
import sys

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


@pytest.mark.parametrize("shape", [(480, 640), (100, 37), (37, 100), (300, 300), (20, 30)])
def test_crop_then_resize_matches_resize_then_crop(shape):
    """The shorter-side resize + centre crop the bundle format specifies, computed the
    textbook way (resize the whole image, then crop), agrees with the crop-first version."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), max(2.0, min(shape) / 16))  # detail at output scale
    height, width = shape
    scale = 64 / min(height, width)
    new_w, new_h = max(64, round(width * scale)), max(64, round(height * scale))
    resized = cv2.resize(smooth, (new_w, new_h),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (new_h - 64) // 2, (new_w - 64) // 2
    textbook = resized[top:top + 64, left:left + 64].astype(int)
    out = images.resize_center_crop(smooth, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - textbook).mean() < 2.0


def test_a_one_pixel_strip_is_cropped_before_it_is_enlarged():
    """A 60000x1 frame used to be enlarged to 60000*224 pixels before cropping (gigabytes);
    cropped first it costs one pixel. Run in a fresh process to read its peak memory."""
    code = ("import resource, numpy as np\n"
            "from adu_perception.runtime.images import preprocess, to_rgb\n"
            "strip = np.zeros((1, 60000, 3), np.uint8); strip[0, 29999:30001] = (10, 200, 30)\n"
            "rgb = to_rgb(strip[:, :, ::-1].tobytes(), 60000, 1, 180000, 'bgr8')\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "batch = preprocess([rgb, rgb.transpose(1, 0, 2)], 224)\n"
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(batch.shape, batch[0, 0, 0].tolist(), batch[1, 5, 7].tolist(), (after - before) // 1024)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    growth_mb = int(run.stdout.split()[-1])
    assert run.stdout.startswith("(2, 224, 224, 3) [10, 200, 30] [10, 200, 30]"), run.stdout
    assert growth_mb < 50, f"peak memory grew by {growth_mb} MB"


def test_context_margin_grows_boxes_and_stops_at_the_borders():
    assert images.expand_region((40, 20, 20, 10), 0.5, 100, 60) == (30, 15, 40, 20)
    assert images.expand_region((0, 0, 20, 10), 0.5, 100, 60) == (0, 0, 30, 15)     # corner
    assert images.expand_region((90, 55, 10, 5), 1.0, 100, 60) == (80, 50, 20, 10)  # far corner
    assert images.expand_region((95, 50, 30, 30), 0.0, 100, 60) == (95, 50, 5, 10)  # clip only
    image = gradient(100, 60)
    ((region, crop),) = images.crop_regions(image, [(40, 20, 20, 10)], margin=0.5)
    assert region == (40, 20, 20, 10)  # the box itself; the crop carries the context
    np.testing.assert_array_equal(crop, image[15:35, 30:70])
    ((region, crop),) = images.crop_regions(image, [(-10, -10, 20, 20)], margin=0.25)
    assert region == (0, 0, 10, 10)
    np.testing.assert_array_equal(crop, image[0:12, 0:12])
    assert not images.inside((100, 0, 5, 5), 100, 60) and images.inside((99, 59, 5, 5), 100, 60)


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
