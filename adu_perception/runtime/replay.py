"""`adu replay`: the node's predictor + decision over recorded input, without a ROS graph.

Input: an image folder (searched recursively; summarised per immediate subfolder), a video
file (OpenCV), or an MCAP recording with sensor_msgs/Image or sensor_msgs/CompressedImage
messages (summarised per topic). Unreadable images are reported and skipped. Results go
to stdout one line per frame, or to a JSONL file; a summary table follows.
"""
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import images
from .predictor import Predictor, check_threshold

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_SCHEMAS = {"sensor_msgs/msg/Image": images.image_msg_to_rgb,
                 "sensor_msgs/msg/CompressedImage": images.compressed_msg_to_rgb}
COUNT_COLUMNS = ("frames", "regions", "reported", "suppressed", "forgotten_domain",
                 "illustrated_texture", "unfamiliar", "low_confidence", "unreadable")


class ReplayError(ValueError):
    """The input cannot be replayed at all (missing, empty, unknown kind)."""


@dataclass
class Frame:
    source: str                   # summary group: subfolder, video file name or MCAP topic
    name: str                     # the frame within it: relative path, "frame 12", "topic #3"
    rgb: Optional[np.ndarray]     # None when unreadable
    error: Optional[str] = None
    stamp: Optional[float] = None  # seconds (video position or message header stamp)


# -- sources ------------------------------------------------------------------------------------

def iter_frames(path, topics: Optional[Sequence[str]] = None) -> Iterator[Frame]:
    path = Path(path)
    if topics and path.suffix.lower() != ".mcap":
        raise ReplayError(f"topics {list(topics)} given, but {path} is not an .mcap recording "
                          f"(topics choose the image streams of an MCAP file)")
    if path.is_dir():
        return _folder_frames(path)
    if not path.is_file():
        raise ReplayError(f"input not found: {path}")
    if path.suffix.lower() == ".mcap":
        return _mcap_frames(path, topics)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frames(path)
    raise ReplayError(f"cannot replay {path}: expected a folder of images, a video "
                      f"({', '.join(sorted(VIDEO_SUFFIXES))}) or an .mcap file")


def _folder_frames(root: Path) -> Iterator[Frame]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReplayError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    for file in files:
        relative = file.relative_to(root)
        source = relative.parts[0] if len(relative.parts) > 1 else "."
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None or bgr.size == 0:
            yield Frame(source, str(relative), None, "unreadable or corrupt image file")
        else:
            yield Frame(source, str(relative), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _video_frames(path: Path) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ReplayError(f"OpenCV cannot open video {path}")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(path.name, f"frame {index}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                        stamp=capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            index += 1
    finally:
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # from the container: 0 if unknown
        capture.release()
    if index == 0:
        raise ReplayError(f"no frames could be read from video {path}")
    if index < expected:
        log.warning("video %s: read %d of the %d frames its header lists (truncated or damaged?)",
                    path, index, expected)


# What each of the mcap package's read errors means for a recording; any other error while
# reading (struct.error, UnicodeDecodeError, ... at a cut inside a record) is a damaged record.
MCAP_PROBLEMS = {"InvalidMagic": "not an MCAP file (it does not start with MCAP's magic bytes)",
                 "EndOfFile": "the file ends early (truncated, or still being written?)"}
DAMAGED_RECORD = "a damaged record (truncated or corrupt file?)"


def _mcap_read_errors():
    """The exception types a damaged or cut recording raises while the mcap package reads it."""
    import struct

    from mcap.exceptions import McapError

    return McapError, struct.error, UnicodeDecodeError, EOFError, OSError


def _mcap_frames(path: Path, topics: Optional[Sequence[str]]) -> Iterator[Frame]:
    """The recording's image messages; a read error after some of them ends it with one
    unreadable frame that says why (those read are kept), before any is a ReplayError."""
    read = 0
    try:
        for frame in _mcap_messages(path, topics):
            read += 1
            yield frame
    except _mcap_read_errors() as error:
        problem = MCAP_PROBLEMS.get(type(error).__name__, DAMAGED_RECORD)
        if not read:
            raise ReplayError(f"cannot read MCAP recording {path}: {problem}") from None
        yield Frame(path.name, "end of recording", None,
                    f"recording cut short after {read} image messages: {problem}")


def _mcap_messages(path: Path, topics: Optional[Sequence[str]]) -> Iterator[Frame]:
    from mcap.exceptions import InvalidMagic
    from mcap.reader import NonSeekingReader, make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as file:
        try:
            reader = make_reader(file, decoder_factories=[DecoderFactory()])
            summary = reader.get_summary()
        except InvalidMagic:
            raise
        except _mcap_read_errors() as error:  # no readable end (a recording cut short)
            log.warning("%s has no readable summary (%s): reading it front to back", path,
                        MCAP_PROBLEMS.get(type(error).__name__, DAMAGED_RECORD))
            file.seek(0)
            reader, summary = NonSeekingReader(file, decoder_factories=[DecoderFactory()]), None
        if summary is not None:
            available = {channel.topic: summary.schemas[channel.schema_id].name
                         for channel in summary.channels.values() if channel.schema_id in summary.schemas}
            image_topics = [t for t, schema in available.items() if schema in IMAGE_SCHEMAS]
            if topics:
                unknown = [t for t in topics if t not in image_topics]
                if unknown:
                    raise ReplayError(f"{path}: {unknown} are not image topics (image topics: "
                                      f"{image_topics})")
                image_topics = list(topics)
            if not image_topics:
                raise ReplayError(f"{path} has no sensor_msgs/Image or CompressedImage topics "
                                  f"(topics: {available})")
            topics = image_topics
        counters = Counter()
        # front to back: as recorded (sorting by log time would need the whole file first)
        in_order = {} if summary is not None else {"log_time_order": False}
        for schema, channel, _, msg in reader.iter_decoded_messages(topics=topics, **in_order):
            convert = IMAGE_SCHEMAS.get(schema.name if schema else "")
            if convert is None:
                continue
            counters[channel.topic] += 1
            name = f"{channel.topic} #{counters[channel.topic] - 1}"
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            try:
                yield Frame(channel.topic, name, convert(msg), stamp=stamp)
            except images.ImageFormatError as error:
                yield Frame(channel.topic, name, None, str(error), stamp=stamp)


# -- replay ------------------------------------------------------------------------------------

def parse_regions(texts: Optional[Sequence[str]]) -> Optional[List[images.Region]]:
    """['x,y,w,h', ...] -> regions."""
    if not texts:
        return None
    values = []
    for text in texts:
        parts = text.replace(";", ",").split(",")
        try:
            values += [int(v) for v in parts if v.strip()]
        except ValueError:
            raise ReplayError(f"region {text!r} is not 'x,y,w,h' in integers") from None
    return images.regions_from_flat(values)


def parse_grid(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'RxC' -> (rows, cols)."""
    if not text:
        return None
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ReplayError(f"grid {text!r} is not ROWSxCOLS, e.g. 2x3") from None
    if rows < 1 or cols < 1:
        raise ReplayError(f"grid {text!r} needs at least 1 row and 1 column")
    return rows, cols


def frame_crops(rgb: np.ndarray, regions=None, grid=None, context_margin: float = 0.0):
    """[(region, crop)] of one frame as the node cuts it: its regions (grown by
    context_margin), else the tiles of a grid, else the whole frame."""
    height, width = rgb.shape[:2]
    boxes = regions or (images.grid_regions(width, height, *grid) if grid else None)
    return images.crop_regions(rgb, boxes, context_margin if regions else 0.0)


def _frame_line(record: dict) -> str:
    if "error" in record:
        return f"{record['frame']}: SKIPPED ({record['error']})"
    parts = []
    for item in record["results"]:
        where = "" if len(record["results"]) == 1 else f"[{','.join(map(str, item['region']))}] "
        if item["reported"]:
            parts.append(f"{where}REPORTED {item['label']} {item['score']:.2f}")
        else:
            parts.append(f"{where}SUPPRESSED {item['reason']} (domain {item['domain']}, "
                         f"top {item['top_k'][0]['label']} {item['top_k'][0]['score']:.2f})")
    return f"{record['frame']}: " + " | ".join(parts)


def format_summary(summary: dict) -> str:
    rows = [(source, *(counts[c] for c in COUNT_COLUMNS)) for source, counts in summary.items()]
    totals = ("TOTAL", *(sum(counts[c] for counts in summary.values()) for c in COUNT_COLUMNS))
    header = ("source", *COUNT_COLUMNS)
    widths = [max(len(str(row[i])) for row in [header, *rows, totals]) for i in range(len(header))]
    line = lambda row: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)  # noqa: E731
                                 for i, (v, w) in enumerate(zip(row, widths)))
    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, line(totals)])


def replay(bundle, input_path, regions=None, grid=None, backend: str = "auto",
           out=None, batch_size: int = 16, confidence: Optional[float] = None,
           forgotten_domain: Optional[float] = None, top_k: int = 3,
           max_frames: Optional[int] = None, topics: Optional[Sequence[str]] = None,
           context_margin: float = 0.0, echo: Callable[[str], None] = print,
           min_real_similarity: Optional[float] = None) -> dict:
    """Classify every frame (or its regions / grid tiles); returns {source: Counter}.
    context_margin: as the node's parameter, for --regions (not grid tiles)."""
    if not 0.0 <= context_margin <= 1.0:
        raise ReplayError(f"context margin {context_margin} is not between 0 and 1")
    check_threshold("confidence", confidence)
    check_threshold("forgotten_domain", forgotten_domain)
    check_threshold("min_real_similarity", min_real_similarity, low=-1.0)
    if out and Path(out).is_dir():
        raise ReplayError(f"output {out} is a folder: give a file name, e.g. {Path(out) / 'replay.jsonl'}")
    for name, value in (("batch size", batch_size), ("top k", top_k), ("max frames", max_frames)):
        if value is not None and value < 1:
            raise ReplayError(f"{name} {value} is not an integer >= 1")
    predictor = Predictor(bundle, backend=backend)
    if min_real_similarity is not None and predictor.bundle.open_set is None:
        raise ReplayError(f"--min-real-similarity needs a bundle with an open-set memory bank: "
                          f"{predictor.bundle.notes}")
    echo(f"bundle {predictor.bundle.path}, backend {predictor.backend}")
    if predictor.bundle.notes:
        echo(f"note: {predictor.bundle.notes}")
    summary = {}
    pending: List[Tuple[Frame, list]] = []
    writer = open(out, "w") if out else None

    def emit(record: dict):
        if writer:
            writer.write(json.dumps(record) + "\n")
        else:
            echo(_frame_line(record))

    def flush():
        if not pending:
            return
        crops = [crop for _, frame_crops in pending for _, crop in frame_crops]
        boxes = [box for _, frame_crops in pending for box, _ in frame_crops]
        decisions = predictor.classify_crops(crops, confidence, forgotten_domain, top_k, regions=boxes,
                                             min_real_similarity=min_real_similarity)
        start = 0
        for frame, frame_crops in pending:
            results = decisions[start:start + len(frame_crops)]
            start += len(frame_crops)
            counts = summary[frame.source]
            counts["regions"] += len(results)
            for d in results:
                counts["reported" if d.reported else "suppressed"] += 1
                if not d.reported:
                    counts[d.reason] += 1
            emit({"source": frame.source, "frame": frame.name, "stamp": frame.stamp,
                  "results": [d.to_dict() for d in results]})
        pending.clear()

    try:
        for index, frame in enumerate(iter_frames(input_path, topics)):
            if max_frames is not None and index >= max_frames:
                break
            counts = summary.setdefault(frame.source, Counter())
            counts["frames"] += 1
            if frame.rgb is not None:
                try:
                    pending.append((frame, frame_crops(frame.rgb, regions, grid, context_margin)))
                except images.ImageFormatError as error:
                    frame.error = str(error)
            if frame.error:
                counts["unreadable"] += 1
                log.warning("skipping %s: %s", frame.name, frame.error)
                flush()  # keep the output in input order
                emit({"source": frame.source, "frame": frame.name, "stamp": frame.stamp,
                      "error": frame.error})
            if sum(len(c) for _, c in pending) >= batch_size:
                flush()
        flush()
    finally:
        if writer:
            writer.close()
    if out:
        echo(f"results written to {out}")
    echo(format_summary(summary))
    return summary
