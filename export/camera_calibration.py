"""`adu calibrate`: a bundle's thresholds for one camera, from that camera's real crops.

The bundle's thresholds were chosen on its training dataset's photos. Another camera (its
optics, processing, light) can move real objects past them: the demo's bundles suppress
26-31 % of a real camera's vehicle crops (README, Known limits). Given crops that are all
real (no labels, no illustrations: a recording of the vehicle's own camera), the rules
that need no labels are relaxed until each keeps its share of them
(`thresholds.relax_for_real_items`), and the result is written as ROS 2 parameters for
that camera's node. Nothing becomes stricter: real crops say what must stay reported, not
what an illustration looks like.

Torch-free (the runtime predictor and numpy), so it runs on the vehicle's own computer.
"""
import re
from pathlib import Path
from typing import Optional

import numpy as np

from adu_perception.runtime.images import ImageFormatError
from adu_perception.runtime.predictor import Predictor
from adu_perception.runtime.replay import frame_crops, iter_frames

from .thresholds import relax_for_real_items


ROS_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # rcl's rule for a namespace token


class CalibrationError(ValueError):
    """The crops cannot calibrate this bundle (none readable, bad keep, margin or namespace)."""


def camera_scores(predictor: Predictor, input_path, regions=None, grid=None,
                  context_margin: float = 0.0, topics=None, batch_size: int = 32,
                  max_frames: Optional[int] = None):
    """(rule-1 scores [n], real similarities [n] or None, frames skipped) over the crops of
    every frame of a folder, video or MCAP, cut as the node cuts them (`frame_crops`: the
    whole frame unless regions or a grid are given)."""
    rule1, similarity, unreadable, batch = [], [], 0, []

    def flush():
        for decision in predictor.classify_crops(batch):
            texture = decision.p_texture if decision.p_texture is not None else -np.inf
            rule1.append(max(decision.p_forgotten, texture))
            similarity.append(decision.real_similarity)
        batch.clear()

    for index, frame in enumerate(iter_frames(input_path, topics)):
        if max_frames is not None and index >= max_frames:
            break
        if frame.rgb is None:
            unreadable += 1
            continue
        try:
            batch.extend(crop for _, crop in frame_crops(frame.rgb, regions, grid, context_margin))
        except ImageFormatError:
            unreadable += 1
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    with_bank = predictor.bundle.open_set is not None
    return (np.asarray(rule1, dtype=np.float64),
            np.asarray(similarity, dtype=np.float64) if with_bank else None, unreadable)


def calibrate_camera(bundle, input_path, keep: float = 0.95, backend: str = "auto",
                     regions=None, grid=None, context_margin: float = 0.0, topics=None,
                     max_frames: Optional[int] = None) -> dict:
    """The camera's thresholds (relax_for_real_items' result) plus `unreadable` and `bundle`."""
    if not 0.5 <= keep < 1.0:
        raise CalibrationError(f"keep {keep} is not in [0.5, 1): the share of real crops to keep")
    if not 0.0 <= context_margin <= 1.0:
        raise CalibrationError(f"context margin {context_margin} is not between 0 and 1")
    predictor = Predictor(bundle, backend=backend)
    rule1, similarity, unreadable = camera_scores(predictor, input_path, regions, grid,
                                                  context_margin, topics, max_frames=max_frames)
    if len(rule1) == 0:
        raise CalibrationError(f"no crops could be cut from {input_path}: {unreadable} frames "
                               f"unreadable, or without the given regions or grid inside them")
    b = predictor.bundle
    result = relax_for_real_items(rule1, similarity, b.forgotten_domain_threshold,
                                  b.min_real_similarity_threshold, b.confidence_threshold, keep)
    result.update(unreadable=unreadable, bundle=str(b.path), keep=keep)
    return result


def parameters_yaml(result: dict, namespace: str = "", source: str = "") -> str:
    """A ROS 2 parameter file for the node of `namespace` (all namespaces when empty), to
    pass after the package's config (launch argument `params_file`)."""
    namespace = namespace.strip("/")
    if namespace and not all(ROS_NAME_TOKEN.fullmatch(token) or token in ("*", "**")
                             for token in namespace.split("/")):
        raise CalibrationError(f"namespace {namespace!r} is not a ROS namespace (tokens of letters, "
                               f"digits and '_', not starting with a digit, separated by '/')")
    node = f"/{namespace}/classifier_node" if namespace else "/**/classifier_node"
    lines = [f"# Written by `adu calibrate` for bundle {result['bundle']}",
             f"# from {result['n_crops']} real crops of {source or 'this camera'}: each rule keeps at "
             f"least {result['share_required']} of them.",
             f"{node}:", "  ros__parameters:",
             f"    forgotten_domain_threshold: {result['forgotten_domain']!r}"]
    if result.get("open_set_kept") is not None:
        lines.append(f"    min_real_similarity: {result['min_real_similarity']!r}")
    return "\n".join(lines) + "\n"


def summary_lines(result: dict) -> list:
    n = result["n_crops"]
    pct = lambda k: f"{result[k]} of {n} ({result[k] / n:.1%})"  # noqa: E731
    lines = [f"{n} real crops ({result['unreadable']} unreadable frames skipped); each rule on must keep "
             f"{result['share_required']} ({result['rules_on']} rule(s) on, keep {result['keep']:.0%})",
             f"forgotten_domain {result['forgotten_domain_before']:.2f} -> "
             f"{result['forgotten_domain']:.2f}: rule 1 lets through {pct('rule1_kept_before')} -> "
             f"{pct('rule1_kept')}"]
    if result.get("open_set_kept") is not None:
        lines.append(f"min_real_similarity {result['min_real_similarity_before']:.4f} -> "
                     f"{result['min_real_similarity']:.4f}: the open-set rule lets through "
                     f"{pct('open_set_kept_before')} -> {pct('open_set_kept')}")
    if result["share_required"] == n:
        lines.append(f"with {n} crops every one must stay reported: too few for the count to let "
                     f"any go (record more of the camera)")
    relaxed = (result["forgotten_domain"] != result["forgotten_domain_before"]
               or result["min_real_similarity"] != result["min_real_similarity_before"])
    if not relaxed:
        lines.append("the bundle's thresholds already keep this share of the camera's crops: "
                     "the parameters repeat them")
    if result["forgotten_domain"] > result["forgotten_domain_before"]:
        lines.append("a higher forgotten_domain also suppresses fewer illustrations: check "
                     "with `adu replay --forgotten-threshold` on illustrations this camera sees")
    return lines


def write_parameters(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
