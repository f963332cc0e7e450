"""vision_msgs in and out: a detector's boxes as regions, results as Detection2DArray.

vision_msgs is not on PyPI: `make install` builds it from ../shared/vendor into the venv,
and a ROS install ships its own. Without it AVAILABLE is False and the node says which of
its outputs are off.
"""
import math
from typing import List, NamedTuple, Optional, Sequence

try:
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                                 ObjectHypothesisWithPose, VisionClass)
    AVAILABLE = True
except ImportError:  # the caller checks AVAILABLE before using anything below
    BoundingBox2D = Detection2D = Detection2DArray = LabelInfo = None
    ObjectHypothesisWithPose = VisionClass = None
    AVAILABLE = False

MISSING = ("vision_msgs is not installed (run `make install` beside ../shared/vendor, or "
           "install ros-<distro>-vision-msgs)")


MAX_COORDINATE = 2 ** 31  # pixels: edges beyond this are no camera's (and overflow integers)


class Box(NamedTuple):
    """One box to classify: its id, its pixel region and the bbox to hand back unchanged."""
    id: str
    region: Optional[tuple]   # (x, y, width, height) in pixels, may lie partly outside the frame;
                              # None: the input box is invalid (region_of says why)
    bbox: Optional[object]    # vision_msgs/BoundingBox2D of the input, or None (built from region)


def region_of(bbox) -> Optional[tuple]:
    """BoundingBox2D (centre + size, floating point pixels) -> integer (x, y, w, h), or None
    for a box with no area, or non-finite or absurd (beyond MAX_COORDINATE) edges.
    Edges are rounded, so a box that came from integer pixels maps back exactly."""
    cx, cy = bbox.center.position.x, bbox.center.position.y
    edges = (cx - bbox.size_x / 2, cy - bbox.size_y / 2, cx + bbox.size_x / 2, cy + bbox.size_y / 2)
    if not all(math.isfinite(e) and abs(e) < MAX_COORDINATE for e in edges):
        return None
    x0, y0, x1, y1 = map(round, edges)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def boxes_from_detections(msg) -> List[Box]:
    """The boxes of a Detection2DArray; a detection without an id gets its index."""
    return [Box(d.id or str(i), region_of(d.bbox), d.bbox) for i, d in enumerate(msg.detections)]


def boxes_from_regions(regions: Sequence[tuple]) -> List[Box]:
    return [Box(str(i), tuple(int(v) for v in r), None) for i, r in enumerate(regions)]


def bbox_of(region) -> "BoundingBox2D":
    x, y, w, h = region
    bbox = BoundingBox2D(size_x=float(w), size_y=float(h))
    bbox.center.position.x, bbox.center.position.y = x + w / 2.0, y + h / 2.0
    return bbox


def detection(header, box: Box, top_k: Sequence[dict]) -> "Detection2D":
    """A Detection2D with the input's bbox and id and our hypotheses (class_id = class name)."""
    hypotheses = []
    for item in top_k:
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = item["label"]
        hypothesis.hypothesis.score = float(item["score"])
        hypotheses.append(hypothesis)
    return Detection2D(header=header, results=hypotheses, id=box.id,
                       bbox=box.bbox if box.bbox is not None else bbox_of(box.region))


def detection_array(header, detections) -> "Detection2DArray":
    return Detection2DArray(header=header, detections=list(detections))


def label_info(header, class_names: Sequence[str], threshold: float) -> "LabelInfo":
    """The class map (index -> name); hypotheses name the class directly, this is for tools."""
    return LabelInfo(header=header, threshold=float(threshold), class_map=[
        VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)])
