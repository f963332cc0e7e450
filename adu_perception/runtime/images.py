"""Camera frames to model input: ROS image encodings -> RGB, compressed decoding, the
bundle's resize + center crop, and regions of interest / grid tiles.

Pure numpy + OpenCV (no cv_bridge, no ROS import), so the node, `adu replay` and the tests
share one conversion. Bad input raises ImageFormatError naming the problem.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

Region = Tuple[int, int, int, int]  # x, y, width, height in pixels


# pixels: the shortest side of a crop worth classifying (also the node's reason "too_small")
MIN_CROP_SIDE = 8


class ImageFormatError(ValueError):
    """A frame that cannot be turned into an RGB image (encoding, size, step, data, decoding)."""


# encoding -> (bytes per pixel, OpenCV conversion to RGB or None when already RGB).
# ROS `yuv422` is UYVY byte order (U Y0 V Y1); `yuv422_yuy2` / `yuyv` is Y0 U Y1 V.
ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
    "yuv422": (2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, cv2.COLOR_YUV2RGB_YUYV),
}


def _byte_array(data) -> np.ndarray:
    """A flat uint8 view of bytes / bytearray / array.array('B') / numpy data (no copy)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:  # a plain list of ints
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def to_rgb(data, width: int, height: int, step: int, encoding: str) -> np.ndarray:
    """Raw image bytes (sensor_msgs/Image layout) -> RGB uint8 [height, width, 3].

    `step` is the row length in bytes; rows may be padded (step > width * bytes per pixel).
    """
    key = (encoding or "").lower()
    if key not in ENCODINGS:
        raise ImageFormatError(f"unsupported encoding {encoding!r} (supported: "
                               f"{', '.join(sorted(ENCODINGS))})")
    channels, conversion = ENCODINGS[key]
    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise ImageFormatError(f"empty frame: {width}x{height}")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageFormatError(f"step {step} is shorter than a {encoding} row of {width} "
                               f"pixels ({row_bytes} bytes)")
    if channels == 2 and width % 2:
        raise ImageFormatError(f"{encoding} needs an even width (pixel pairs share U/V), got {width}")
    buffer = _byte_array(data)
    if buffer.size != step * height:
        raise ImageFormatError(f"data holds {buffer.size} bytes, expected step * height = "
                               f"{step} * {height} = {step * height}")
    # Drop the row padding, then view as pixels (no copy until OpenCV converts).
    pixels = buffer.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    if channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (or any object with its fields, e.g. a decoded MCAP message) -> RGB."""
    return to_rgb(msg.data, msg.width, msg.height, msg.step, msg.encoding)


def decode_compressed(data) -> np.ndarray:
    """JPEG/PNG bytes (sensor_msgs/CompressedImage.data) -> RGB uint8 [H, W, 3]."""
    buffer = _byte_array(data)
    if buffer.size == 0:
        raise ImageFormatError("empty compressed frame (0 bytes)")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageFormatError(f"cannot decode compressed frame ({buffer.size} bytes; "
                               f"expected JPEG or PNG)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    return decode_compressed(msg.data)


def rgb_to_image_fields(rgb: np.ndarray) -> dict:
    """Fields of an rgb8 sensor_msgs/Image holding `rgb` (for overlays and tests)."""
    height, width = rgb.shape[:2]
    return {"height": height, "width": width, "encoding": "rgb8", "is_bigendian": 0,
            "step": width * 3, "data": np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()}


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred square of side min(height, width), resized to size x size (the bundle's
    `shorter_side` + `center` preprocessing: the same pixels as resizing the shorter side to
    `size` and then centre-cropping, up to sub-pixel rounding).

    Cropping first keeps the cost bounded by the square, whatever the aspect ratio: a
    60000x1 strip is cropped to 1x1 before it is enlarged, never enlarged to 60000*size.
    Bicubic when enlarging; area averaging when shrinking (bicubic alone aliases on large
    camera frames). Training's loader uses this very function, so the node sees the pixels
    the thresholds were chosen on.
    """
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ImageFormatError(f"empty image {width}x{height}")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interpolation)


def preprocess(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB crops of any size -> the model's input batch uint8 [N, size, size, 3]."""
    for index, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            what = (f"{crop.dtype} {crop.shape}" if isinstance(crop, np.ndarray) else type(crop).__name__)
            raise ImageFormatError(f"crop {index} must be a uint8 RGB image [H, W, 3], got {what}")
    return np.stack([resize_center_crop(crop, size) for crop in crops])


def regions_from_flat(values: Sequence[int]) -> List[Region]:
    """[x, y, w, h, x, y, w, h, ...] (a ROS integer-array parameter) -> regions."""
    values = [int(v) for v in values]
    if len(values) % 4:
        raise ValueError(f"regions need 4 integers each (x, y, width, height); got {len(values)} "
                         f"values")
    regions = [tuple(values[i:i + 4]) for i in range(0, len(values), 4)]
    for x, y, w, h in regions:
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise ValueError(f"region {(x, y, w, h)}: x, y must be >= 0 and width, height > 0")
    return regions


def grid_regions(width: int, height: int, rows: int, cols: int) -> List[Region]:
    """rows x cols tiles covering the image (the last row/column takes the remainder)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"grid needs rows, cols >= 1, got {rows}x{cols}")
    if rows > height or cols > width:
        raise ImageFormatError(f"a {rows}x{cols} grid does not fit a {width}x{height} image")
    xs = [width * c // cols for c in range(cols + 1)]
    ys = [height * r // rows for r in range(rows + 1)]
    return [(xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r])
            for r in range(rows) for c in range(cols)]


def expand_region(region: Region, margin: float, width: int, height: int) -> Region:
    """`region` grown by `margin` times its width (height) on the left and right (top and
    bottom), clipped to a width x height image. margin 0 only clips."""
    x, y, w, h = region
    dx, dy = int(round(margin * w)), int(round(margin * h))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def inside(region: Region, width: int, height: int) -> bool:
    """Does the region overlap a width x height image at all?"""
    x, y, w, h = region
    return w > 0 and h > 0 and x < width and y < height and x + w > 0 and y + h > 0


def too_small(region: Region, width: int, height: int) -> bool:
    """Is the part of the region inside the image under MIN_CROP_SIDE on a side? Enlarged to
    the model's input, such a crop is a blur of a few pixels that any class can be read into."""
    _, _, w, h = expand_region(region, 0.0, width, height)
    return min(w, h) < MIN_CROP_SIDE


def crop_regions(image: np.ndarray, regions: Optional[Sequence[Region]], margin: float = 0.0):
    """Crops of `image` for each region, clipped to the image: [(region, crop)].

    `region` is the clipped region; the crop also holds `margin` times its size of context
    on every side (where the image has it). No regions -> the whole image. A region entirely
    outside the image is an error (the regions do not match this camera's resolution).
    """
    height, width = image.shape[:2]
    if not regions:
        if min(width, height) < MIN_CROP_SIDE:
            raise ImageFormatError(f"image {width}x{height} is under the {MIN_CROP_SIDE} px minimum side")
        return [((0, 0, width, height), image)]
    crops = []
    for region in regions:
        if not inside(region, width, height):
            raise ImageFormatError(f"region {tuple(region)} lies outside the {width}x{height} image")
        if too_small(region, width, height):
            raise ImageFormatError(f"region {tuple(region)} has under {MIN_CROP_SIDE} px on a side "
                                   f"inside the {width}x{height} image")
        clipped = expand_region(region, 0.0, width, height)
        x0, y0, w, h = expand_region(clipped, margin, width, height) if margin else clipped
        crops.append((clipped, image[y0:y0 + h, x0:x0 + w]))
    return crops
