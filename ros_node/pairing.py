"""Pair camera frames with a detector's boxes by exact header stamp, in a bounded cache.

A detector publishes its vision_msgs/Detection2DArray with the header of the image it ran
on, so the pair shares one stamp exactly (message_filters' ExactTime policy; that package is
not installable here, and the rule is small). Either message may arrive first. Each side
keeps at most `capacity` messages waiting for a partner; the oldest is evicted when a newer
one arrives and counts as unmatched. Pure Python, no ROS import: the node passes stamps as
(sec, nanosec) tuples.
"""
import threading
from collections import OrderedDict
from typing import Any, Optional, Tuple

Stamp = Tuple[int, int]


class StampPairer:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"the pairing cache needs capacity >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._waiting = {"image": OrderedDict(), "detections": OrderedDict()}
        self.unmatched = {"image": 0, "detections": 0}
        self._lock = threading.Lock()

    def add_image(self, stamp: Stamp, message: Any) -> Optional[Tuple[Any, Any]]:
        """(image, detections) when this frame's boxes were waiting, else None."""
        pair = self._add("image", "detections", stamp, message)
        return None if pair is None else (message, pair)

    def add_detections(self, stamp: Stamp, message: Any) -> Optional[Tuple[Any, Any]]:
        """(image, detections) when this array's frame was waiting, else None."""
        pair = self._add("detections", "image", stamp, message)
        return None if pair is None else (pair, message)

    def _add(self, side: str, other: str, stamp: Stamp, message: Any):
        stamp = (int(stamp[0]), int(stamp[1]))
        with self._lock:
            partner = self._waiting[other].pop(stamp, None)
            if partner is not None:
                return partner
            waiting = self._waiting[side]
            if stamp in waiting:  # a repeated stamp: the newer message replaces the older
                self.unmatched[side] += 1
                del waiting[stamp]
            waiting[stamp] = message
            while len(waiting) > self.capacity:
                waiting.popitem(last=False)
                self.unmatched[side] += 1
            return None

    def waiting(self) -> dict:
        """{"images": n, "detections": n} waiting for their partner."""
        with self._lock:
            return {"images": len(self._waiting["image"]), "detections": len(self._waiting["detections"])}
