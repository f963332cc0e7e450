"""The node's pure parts, on crafted inputs: exact-stamp pairing in a bounded cache, the
diagnostics levels, and a detector's boxes to pixel regions and back."""
import pytest

from adu_perception.ros_node import health
from adu_perception.ros_node.pairing import StampPairer

LIMITS = health.Limits(max_drop_ratio=0.5, min_rate_hz=10.0)


def test_pairing_matches_exact_stamps_in_either_order():
    pairer = StampPairer(3)
    assert pairer.add_image((1, 5), "img1") is None
    assert pairer.add_detections((1, 5), "det1") == ("img1", "det1")
    assert pairer.add_detections((2, 0), "det2") is None
    assert pairer.add_image((2, 1), "img2b") is None  # 1 ns apart: not the same frame
    assert pairer.add_image((2, 0), "img2") == ("img2", "det2")
    assert pairer.waiting() == {"image": 1, "detections": 0}
    assert pairer.unmatched == {"image": 0, "detections": 0}


def test_pairing_cache_is_bounded_and_counts_what_it_evicts():
    pairer = StampPairer(2)
    for second in range(5):
        assert pairer.add_image((second, 0), f"img{second}") is None
    assert pairer.waiting()["image"] == 2 and pairer.unmatched["image"] == 3
    assert pairer.add_detections((0, 0), "late") is None  # its frame was evicted
    assert pairer.add_detections((4, 0), "det4") == ("img4", "det4")
    pairer.add_detections((9, 0), "a")
    pairer.add_detections((9, 0), "b")  # a repeated stamp replaces the older array
    assert pairer.unmatched["detections"] == 1
    assert pairer.add_image((9, 0), "img9") == ("img9", "b")
    with pytest.raises(ValueError, match="capacity"):
        StampPairer(0)


def healthy(**changes):
    delta = dict(received=30, processed=30, dropped=0, lost=0, invalid=0, errors=0)
    delta.update(changes)
    return delta


@pytest.mark.parametrize("delta, level, fragment", [
    (healthy(), health.OK, "30.0 frames/s"),
    (healthy(errors=1), health.ERROR, "1 inference errors"),
    (healthy(processed=10, dropped=20), health.WARN, "67% of frames dropped or lost"),
    (healthy(processed=14, dropped=0, received=14, lost=286), health.WARN, "lost 286"),
    (healthy(processed=12, dropped=3, received=15), health.OK, "12.0 frames/s"),  # 20 %: fine
    (healthy(received=5, processed=5), health.WARN, "5.0 Hz, below min_rate_hz 10"),
    (healthy(received=0, processed=0), health.WARN, "no frames on /cam"),
    (healthy(invalid=2), health.WARN, "2 invalid frames"),
    (healthy(boxes_outside=4), health.WARN, "4 boxes or regions outside"),
    (healthy(unmatched_images=1), health.WARN, "1 frames and 0 detection arrays without a partner"),
    (healthy(incompatible_qos=1), health.WARN, "incompatible QoS"),
    (healthy(errors=2, dropped=29, processed=1), health.ERROR, "dropped or lost"),  # worst wins
])
def test_diagnostics_levels(delta, level, fragment):
    got_level, message = health.assess(delta, 1.0, LIMITS, "/cam")
    assert got_level == level and fragment in message, message


def test_drop_ratio_counts_transport_losses():
    assert health.drop_ratio(dict(received=14, dropped=0, lost=286)) == pytest.approx(286 / 300)
    assert health.drop_ratio(dict(received=0)) == 0.0
    rate_off = health.Limits(max_drop_ratio=0.5, min_rate_hz=0.0)
    assert health.assess(healthy(received=1, processed=1), 1.0, rate_off, "/cam")[0] == health.OK


def test_boxes_round_trip_between_pixels_and_vision_msgs():
    vision_io = pytest.importorskip("adu_perception.ros_node.vision_io")
    if not vision_io.AVAILABLE:
        pytest.skip("vision_msgs is not installed: run `make install` with ../shared/vendor")
    for region in [(0, 0, 10, 10), (3, 7, 101, 33), (-5, -5, 11, 3)]:
        assert vision_io.region_of(vision_io.bbox_of(region)) == region
    bbox = vision_io.bbox_of((0, 0, 4, 4))
    bbox.size_x = float("nan")
    assert vision_io.region_of(bbox) == (0, 0, 0, 0)  # never inside a frame: reported outside
