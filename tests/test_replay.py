"""`adu replay` over an image folder, a video (cv2.VideoWriter MJPG) and an MCAP recording
(mcap_ros2.writer, sensor_msgs/Image + CompressedImage), with regions, grid, JSONL output,
corrupt input, and the CLI wiring."""
import json
import shutil

import cv2
import pytest

from adu_perception import cli
from adu_perception.runtime.predictor import BACKENDS
from adu_perception.runtime.replay import ReplayError, format_summary, replay
from ros_conftest_helpers import (COMPRESSED_IMAGE_MSGDEF, IMAGE_MSGDEF, color_bundle,  # noqa: F401
                                  driving_crops, raw_frame, runtime_bundle, solid)
from test_open_set import TEAL, write_open_set_bundle

GREEN, RED = (20, 200, 30), (210, 20, 20)  # colour bundle: real car / forgotten-domain poster


def write_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def run(bundle, source, **options):
    lines = []
    summary = replay(bundle, source, echo=lines.append, **options)
    return summary, "\n".join(lines)


def test_folder_summary_per_subfolder_with_a_corrupt_file(tmp_path, color_bundle):
    root = tmp_path / "frames"
    write_png(root / "photos" / "a.png", solid(GREEN))
    write_png(root / "photos" / "b.png", solid(GREEN, 120, 90))
    write_png(root / "posters" / "c.png", solid(RED))
    write_png(root / "posters" / "deeper" / "d.png", solid(RED))  # counts under posters
    write_png(root / "top.png", solid(GREEN))
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (root / "notes.txt").write_text("ignored")
    summary, output = run(color_bundle, root)
    assert set(summary) == {"photos", "posters", "."}
    photos, posters = summary["photos"], summary["posters"]
    assert (photos["frames"], photos["reported"], photos["unreadable"]) == (3, 2, 1)
    assert (posters["frames"], posters["suppressed"], posters["forgotten_domain"]) == (2, 2, 2)
    assert summary["."]["reported"] == 1
    assert "photos/broken.jpg: SKIPPED (unreadable or corrupt image file)" in output
    assert "photos/a.png: REPORTED car" in output
    assert "posters/c.png: SUPPRESSED forgotten_domain (domain cartoon" in output
    table = format_summary(summary).splitlines()
    assert table[0].split() == ["source", "frames", "regions", "reported", "suppressed",
                                "forgotten_domain", "illustrated_texture", "unfamiliar", "low_confidence",
                                "unreadable"]
    assert table[-1].split() == ["TOTAL", "6", "5", "3", "2", "2", "0", "0", "0", "1"]
    # The colour bundle is format 1: replay says the open-set rule is off, once, at the start.
    notes = [line for line in output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "format_version 1" in notes[0]


def test_jsonl_output_regions_and_grid(tmp_path, color_bundle):
    frame = solid(RED, 200, 100)
    frame[:, 100:] = GREEN  # poster on the left, real car on the right
    write_png(tmp_path / "street" / "f.png", frame)
    out = tmp_path / "results.jsonl"
    summary, output = run(color_bundle, tmp_path / "street", grid=(1, 2), out=out)
    assert f"results written to {out}" in output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    left, right = record["results"]
    assert (left["region"], left["suppressed"], left["reason"]) == ([0, 0, 100, 100], True,
                                                                   "forgotten_domain")
    assert (right["region"], right["label"]) == ([100, 0, 100, 100], "car")
    assert summary["."]["regions"] == 2
    summary, _ = run(color_bundle, tmp_path / "street", regions=[(120, 10, 50, 50)])
    assert (summary["."]["regions"], summary["."]["reported"]) == (1, 1)

    # Context margin: the box stays the box, its crop takes in the real car next to the poster.
    def poster_box(margin):
        run(color_bundle, tmp_path / "street", regions=[(80, 0, 20, 100)], out=out,
            context_margin=margin)
        return json.loads(out.read_text())

    poster_only, with_context = poster_box(0.0), poster_box(1.0)
    assert poster_only["results"][0]["region"] == with_context["results"][0]["region"] == [80, 0, 20, 100]
    assert with_context["results"][0]["p_forgotten"] < poster_only["results"][0]["p_forgotten"]
    with pytest.raises(ReplayError, match="context margin"):
        run(color_bundle, tmp_path / "street", regions=[(80, 0, 20, 100)], context_margin=1.5)


def test_video_file(tmp_path, color_bundle):
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(6):
        writer.write(cv2.cvtColor(solid(GREEN if i % 2 == 0 else RED), cv2.COLOR_RGB2BGR))
    writer.release()
    summary, output = run(color_bundle, path)
    counts = summary["drive.avi"]
    assert (counts["frames"], counts["reported"], counts["suppressed"]) == (6, 3, 3)
    assert "frame 0: REPORTED car" in output and "frame 1: SUPPRESSED" in output


def test_a_truncated_video_replays_what_it_holds_and_says_so(tmp_path, color_bundle, caplog):
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(10):
        writer.write(cv2.cvtColor(solid(GREEN if i % 2 == 0 else RED), cv2.COLOR_RGB2BGR))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[:path.stat().st_size * 9 // 10])  # the index at the end is lost
    summary, _ = run(color_bundle, cut)
    read = summary["cut.avi"]["frames"]
    assert 0 < read < 10
    assert f"read {read} of the 10 frames its header lists" in caplog.text


def write_mcap(path, chunk_size=1 << 20):
    from mcap_ros2.writer import Writer

    with open(path, "wb") as file:
        writer = Writer(file, chunk_size=chunk_size)
        image_schema = writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_MSGDEF)
        jpeg_schema = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_MSGDEF)
        for i in range(3):
            data, step = raw_frame(solid(GREEN), "bgr8", padding=8)  # padded rows
            writer.write_message("/camera/image_raw", image_schema, {
                "header": {"stamp": {"sec": 100 + i, "nanosec": 5}, "frame_id": "camera"},
                "height": 48, "width": 64, "encoding": "bgr8", "is_bigendian": 0, "step": step,
                "data": data}, log_time=i * 10**8, publish_time=i * 10**8)
        writer.write_message("/camera/image_raw", image_schema, {  # truncated frame
            "header": {"stamp": {"sec": 103, "nanosec": 0}, "frame_id": "camera"},
            "height": 48, "width": 64, "encoding": "bgr8", "is_bigendian": 0, "step": 192,
            "data": b"\0" * 100}, log_time=4 * 10**8, publish_time=4 * 10**8)
        for i in range(2):
            jpeg = cv2.imencode(".jpg", cv2.cvtColor(solid(RED), cv2.COLOR_RGB2BGR))[1].tobytes()
            writer.write_message("/billboard/compressed", jpeg_schema, {
                "header": {"stamp": {"sec": 200 + i, "nanosec": 0}, "frame_id": "cam2"},
                "format": "jpeg", "data": jpeg}, log_time=(5 + i) * 10**8,
                publish_time=(5 + i) * 10**8)
        writer.finish()


def test_mcap_with_image_and_compressed_topics(tmp_path, color_bundle):
    path = tmp_path / "drive.mcap"
    write_mcap(path)
    out = tmp_path / "mcap.jsonl"
    summary, _ = run(color_bundle, path, out=out)
    camera, billboard = summary["/camera/image_raw"], summary["/billboard/compressed"]
    assert (camera["frames"], camera["reported"], camera["unreadable"]) == (4, 3, 1)
    assert (billboard["frames"], billboard["forgotten_domain"]) == (2, 2)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["stamp"] for r in records if r["source"] == "/camera/image_raw"][:3] == \
        pytest.approx([100.000000005, 101.000000005, 102.000000005])
    assert "data holds 100 bytes" in next(r["error"] for r in records if "error" in r)
    only, _ = run(color_bundle, path, topics=["/billboard/compressed"])
    assert list(only) == ["/billboard/compressed"]
    with pytest.raises(ReplayError, match="not image topics"):
        run(color_bundle, path, topics=["/nope"])


def test_damaged_mcap_recordings(tmp_path, color_bundle):
    whole = tmp_path / "whole.mcap"
    write_mcap(whole, chunk_size=1)  # a chunk per message, as a long recording has many
    data = whole.read_bytes()
    # cut short (power loss): the chunks before the cut are replayed, then one line says why
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[:len(data) // 2])
    summary, output = run(color_bundle, cut)
    assert summary["/camera/image_raw"]["reported"] >= 1
    assert summary["cut.mcap"]["unreadable"] == 1
    assert "recording cut short after" in output and "truncated" in output
    # wherever the cut falls (inside a header, a record, a string), replay never crashes:
    # it replays what it can and says where the recording ends, or names the file as unreadable
    for cut_at in range(0, len(data), 37):
        cut.write_bytes(data[:cut_at])
        try:
            summary, output = run(color_bundle, cut)
        except ReplayError as error:
            assert "cannot read MCAP recording" in str(error) or "no sensor_msgs/Image" in str(error)
        else:
            assert "recording cut short after" in output or summary.get("cut.mcap") is None
    for name, content, problem in (("empty.mcap", b"", "ends early"),
                                   ("text.mcap", b"not an mcap file at all", "not an MCAP file"),
                                   ("stub.mcap", data[:40], "cannot read MCAP recording")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ReplayError, match=problem):
            run(color_bundle, tmp_path / name)


def test_real_driving_crops_with_the_exported_bundle(tmp_path, runtime_bundle):
    for kind in ("vehicles", "non-vehicles"):
        for file in driving_crops(kind, limit=6):
            (tmp_path / kind).mkdir(exist_ok=True)
            shutil.copy(file, tmp_path / kind / file.name)
    summary, _ = run(runtime_bundle, tmp_path)
    for kind in ("vehicles", "non-vehicles"):
        counts = summary[kind]
        assert counts["frames"] == counts["regions"] == 6
        assert counts["reported"] + counts["suppressed"] == 6 and counts["unreadable"] == 0


def test_cli_replay_and_its_errors(tmp_path, color_bundle, capsys):
    write_png(tmp_path / "in" / "x.png", solid(GREEN))
    assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"),
                     "--grid", "2x2", "--out", str(tmp_path / "r.jsonl")]) == 0
    assert len(json.loads((tmp_path / "r.jsonl").read_text())["results"]) == 4
    assert cli.main(["replay", "--bundle", str(tmp_path / "nope"), "--input", str(tmp_path / "in")]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "none")]) == 2
    assert "input not found" in capsys.readouterr().err
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # no TensorRT here: one clear line, exit status 2
        assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"),
                         "--backend", "tensorrt"]) == 2
        assert "needs the `tensorrt` Python package" in capsys.readouterr().err
    assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"),
                     "--grid", "2by2"]) == 2
    assert "ROWSxCOLS" in capsys.readouterr().err
    # bad values are refused before any frame is read, each named
    for options, problem in ((["--out", str(tmp_path)], "is a folder: give a file name"),
                             (["--confidence", "5"], "confidence threshold must be a number in [0, 1]"),
                             (["--forgotten-threshold", "nan"], "forgotten_domain threshold"),
                             (["--topics", "/camera"], "is not an .mcap recording")):
        assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"),
                         *options]) == 2, options
        assert problem in capsys.readouterr().err, options
    for options, problem in ((["--batch-size", "0"], "--batch-size: 0 is not an integer >= 1"),
                             (["--max-frames", "-2"], "--max-frames: -2 is not an integer >= 1")):
        with pytest.raises(SystemExit):  # argparse: usage and the problem, exit status 2
            cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"), *options])
        assert problem in capsys.readouterr().err, options
    # a region under the minimum side: the frame is skipped with the reason
    summary, output = run(color_bundle, tmp_path / "in", regions=[(0, 0, 5, 40)])
    assert summary["."]["unreadable"] == 1 and "under 8 px on a side" in output
    # nothing classified (every region outside the frame): exit 2, not a silent empty table
    assert cli.main(["replay", "--bundle", str(color_bundle), "--input", str(tmp_path / "in"),
                     "--regions", "500,500,10,10"]) == 2
    assert "nothing was classified: all 1 frame(s)" in capsys.readouterr().err


def test_unfamiliar_items_in_replay_json_and_summary(tmp_path, color_bundle):
    bundle = write_open_set_bundle(color_bundle, tmp_path / "open_set_bundle")
    write_png(tmp_path / "in" / "real" / "a.png", solid(GREEN))
    write_png(tmp_path / "in" / "poster" / "b.png", solid(TEAL))  # a style no bank image has
    out = tmp_path / "r.jsonl"
    summary, output = run(bundle, tmp_path / "in", out=out)
    assert "note:" not in output
    assert (summary["real"]["reported"], summary["poster"]["unfamiliar"]) == (1, 1)
    records = {r["source"]: r["results"][0] for r in map(json.loads, out.read_text().splitlines())}
    assert records["real"]["real_similarity"] > 0.99 > records["poster"]["real_similarity"]
    assert (records["poster"]["reason"], records["poster"]["suppressed"]) == ("unfamiliar", True)
    # --min-real-similarity overrides the bundle's threshold; a format-1 bundle cannot take it.
    assert cli.main(["replay", "--bundle", str(bundle), "--input", str(tmp_path / "in"),
                     "--min-real-similarity", "-1", "--out", str(out)]) == 0
    assert all(r["results"][0]["reported"] for r in map(json.loads, out.read_text().splitlines()))
    with pytest.raises(ReplayError, match="needs a bundle with an open-set memory bank"):
        run(color_bundle, tmp_path / "in", min_real_similarity=0.5)
    with pytest.raises(ValueError, match=r"must be a number in \[-1, 1\]"):
        run(bundle, tmp_path / "in", min_real_similarity=2.0)


def test_cli_options_all_have_help_and_backends_match_the_predictor():
    from adu_perception.ros_node import commands

    assert commands._backends() == BACKENDS
    parser = cli.build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    benchmark = subcommands["benchmark"]._subparsers._group_actions[0].choices
    for sub in (subcommands["replay"], benchmark["node"]):
        for action in sub._actions:
            assert action.help, f"{sub.prog} {action.dest} has no help text"
