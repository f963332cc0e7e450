"""The node's pure parts, on crafted inputs: exact-stamp pairing in a bounded cache, the
diagnostics levels, and a detector's boxes to pixel regions and back; and the open-set rule
end to end in a running node (real_similarity in the JSON, "unfamiliar" boxes on ~/suppressed,
the start-up note of a format-1 bundle)."""
import pytest

from adu_perception.ros_node import health
from adu_perception.ros_node.pairing import StampPairer
from ros_conftest_helpers import color_bundle, ros_domain  # noqa: F401 (fixtures)

LIMITS = health.Limits(max_drop_ratio=0.5, min_rate_hz=10.0)


def test_pairing_matches_exact_stamps_in_either_order():
    pairer = StampPairer(3)
    assert pairer.add_image((1, 5), "img1") is None
    assert pairer.add_detections((1, 5), "det1") == ("img1", "det1")
    assert pairer.add_detections((2, 0), "det2") is None
    assert pairer.add_image((2, 1), "img2b") is None  # 1 ns apart: not the same frame
    assert pairer.add_image((2, 0), "img2") == ("img2", "det2")
    assert pairer.waiting() == {"images": 1, "detections": 0}
    assert pairer.unmatched == {"image": 0, "detections": 0}


def test_pairing_cache_is_bounded_and_counts_what_it_evicts():
    pairer = StampPairer(2)
    for second in range(5):
        assert pairer.add_image((second, 0), f"img{second}") is None
    assert pairer.waiting()["images"] == 2 and pairer.unmatched["image"] == 3
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
    (healthy(boxes_unclassified=4), health.WARN, "4 boxes or regions not classified"),
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
    # invalid boxes have no region (the node suppresses them as invalid_box, each named)
    for field, value in (("size_x", float("nan")), ("size_x", float("inf")), ("size_x", 0.0),
                         ("size_y", -20.0), ("size_x", 0.4), ("size_x", 1e308)):
        bbox = vision_io.bbox_of((0, 0, 4, 4))
        setattr(bbox, field, value)
        assert vision_io.region_of(bbox) is None, (field, value)
    bbox = vision_io.bbox_of((0, 0, 4, 4))
    bbox.center.position.x = 1.5e308  # finite, but its edges overflow: no integer region
    assert vision_io.region_of(bbox) is None


# -- the open-set rule in the running node (in-process rclpy, the node tests' Harness) ---------

def test_node_json_carries_real_similarity_and_unfamiliar_boxes_go_to_suppressed(
        ros_domain, color_bundle, tmp_path, capfd):
    rclpy = pytest.importorskip("rclpy")
    import numpy as np

    from adu_perception.ros_node.classifier_node import OUTSIDE_FRAME, ClassifierNode
    from ros_conftest_helpers import image_msg, solid
    from test_classifier_node import Harness
    from test_open_set import GREEN, TEAL, write_open_set_bundle

    bundle = write_open_set_bundle(color_bundle, tmp_path / "open_set_bundle")
    frame = np.concatenate([solid(GREEN, 100, 100), solid(TEAL, 100, 100)], axis=1)
    rclpy.init()
    harnesses = []
    try:
        # A format-1 bundle: one log line at start saying the open-set rule is off.
        harnesses.append(Harness("/fmt1", color_bundle))
        assert "note: bundle format_version 1 has no open-set memory bank" in capfd.readouterr().err
        harness = Harness("/open_set", bundle, regions=[0, 0, 100, 100, 100, 0, 100, 100])
        harnesses.append(harness)
        assert "open-set rule on: knn_cosine, k 2 over 4" in capfd.readouterr().err
        suppressed = []
        vision = None
        try:
            from vision_msgs import msg as vision
        except ImportError:
            pass  # JSON only (the node says so itself)
        if vision is not None:
            harness.tester.create_subscription(
                vision.Detection2DArray, "/open_set/classifier_node/suppressed",
                lambda m: harness._add(suppressed, m), 10)
            harness.wait(lambda: harness.node._vision_pubs["suppressed"].get_subscription_count() > 0,
                         "the tester's ~/suppressed subscription")
        result = harness.ask(image_msg(frame, "rgb8", stamp=(7, 0), frame_id="teal_poster"))
        car, poster = result["results"]
        assert (car["reason"], car["label"]) == ("reported", "car") and car["real_similarity"] > 0.99
        assert (poster["reason"], poster["suppressed"]) == ("unfamiliar", True)
        assert poster["real_similarity"] < 0.99
        if vision is not None:
            harness.wait(lambda: suppressed, "the ~/suppressed array")
            assert [d.id for d in suppressed[0].detections] == ["1"]
        # The threshold is a run-time parameter: -1 turns the rule off, 1.0 refuses everything.
        assert harness.set(min_real_similarity=-1.0)[0].successful
        off = harness.ask(image_msg(frame, "rgb8", stamp=(8, 0), frame_id="rule_off"))["results"]
        assert [r["reason"] for r in off] == ["reported", "reported"]
        assert harness.set(min_real_similarity=1.0)[0].successful
        strict = harness.ask(image_msg(frame, "rgb8", stamp=(9, 0), frame_id="strict"))["results"]
        assert {r["reason"] for r in strict} == {"unfamiliar"}
        assert not harness.set(min_real_similarity=1.5)[0].successful  # outside -1..1
        # A bundle without a bank: the parameter exists but the rule stays off.
        assert harnesses[0].node.settings.min_real_similarity is None
    finally:
        for harness in harnesses:
            harness.close()
        rclpy.shutdown()
    outside = ClassifierNode._unseen(_box((500, 500, 10, 10)), OUTSIDE_FRAME)
    assert (outside["reason"], outside["real_similarity"], outside["region"]) == (
        OUTSIDE_FRAME, None, [500, 500, 10, 10])


def _box(region):
    from adu_perception.ros_node.vision_io import Box

    return Box("0", region, None)
