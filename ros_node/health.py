"""The node's health over one diagnostics period: counters in, a level and a message out.

Pure Python (no ROS import), so every level is testable on crafted numbers. Levels follow
diagnostic_msgs/DiagnosticStatus: 0 OK, 1 WARN, 2 ERROR.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

OK, WARN, ERROR = 0, 1, 2


@dataclass(frozen=True)
class Limits:
    max_drop_ratio: float   # WARN above this fraction of frames dropped or lost in transport
    min_rate_hz: float      # WARN when frames arrive slower than this (0: off)


def drop_ratio(delta: Dict[str, int]) -> float:
    """Frames that never got classified (replaced while the model was busy, or lost in
    transport) over all frames that reached or were known to be sent to the node."""
    arrived = delta.get("received", 0) + delta.get("lost", 0)
    missed = delta.get("dropped", 0) + delta.get("lost", 0)
    return missed / arrived if arrived else 0.0


def assess(delta: Dict[str, int], seconds: float, limits: Limits, topic: str) -> Tuple[int, str]:
    """Level and message for the counter increments `delta` over `seconds`."""
    level, problems = OK, []

    def flag(new_level, text):
        nonlocal level
        level = max(level, new_level)
        problems.append(text)

    if delta.get("errors"):
        flag(ERROR, f"{delta['errors']} inference errors")
    if delta.get("incompatible_qos"):
        flag(WARN, f"{delta['incompatible_qos']} publishers on {topic} with incompatible QoS "
             f"(set the qos parameter to match them)")
    received = delta.get("received", 0)
    if not received and not delta.get("lost"):
        flag(WARN, f"no frames on {topic}")
    rate = received / seconds if seconds > 0 else 0.0
    if received and limits.min_rate_hz > 0 and rate < limits.min_rate_hz:
        flag(WARN, f"frames arrive at {rate:.1f} Hz, below min_rate_hz {limits.min_rate_hz:g}")
    ratio = drop_ratio(delta)
    if ratio > limits.max_drop_ratio:
        flag(WARN, f"{100 * ratio:.0f}% of frames dropped or lost in transport (dropped "
             f"{delta.get('dropped', 0)}, lost {delta.get('lost', 0)}; max_drop_ratio "
             f"{limits.max_drop_ratio:g})")
    if delta.get("invalid"):
        flag(WARN, f"{delta['invalid']} invalid frames skipped")
    if delta.get("boxes_unclassified"):
        flag(WARN, f"{delta['boxes_unclassified']} boxes or regions not classified (outside the "
                   f"frame, invalid or too small)")
    unmatched = delta.get("unmatched_images", 0) + delta.get("unmatched_detections", 0)
    if unmatched:
        flag(WARN, f"{delta.get('unmatched_images', 0)} frames and "
             f"{delta.get('unmatched_detections', 0)} detection arrays without a partner of the "
             f"same stamp")
    if not problems:
        return OK, f"{delta.get('processed', 0) / seconds if seconds > 0 else 0.0:.1f} frames/s"
    return level, "; ".join(problems)
