"""Run checkpoints: everything export needs, written atomically, resumable."""
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from .clip_loader import ClipSpec, FrozenClip, load_clip
from .model import AduModel, PromptConfig
from .text_prompts import PromptedTextEncoder

FORMAT = "adu-checkpoint"
# 2: learned text prompts, the authors' InstaPG block order. Version 1 runs trained another
# model (fixed text, other InstaPG) and cannot be rebuilt by this code: retrain them.
FORMAT_VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not an ADU checkpoint."""


def checkpoint_path(run_or_file) -> Path:
    """A run folder's checkpoint, or the file itself when given a .pt path."""
    path = Path(run_or_file)
    return path if path.suffix == ".pt" else path / CHECKPOINT_NAME


def save_checkpoint(path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(run_or_file) -> dict:
    path = checkpoint_path(run_or_file)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ADU checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format_version')}, "
                              f"this version reads {FORMAT_VERSION}: retrain the run with "
                              f"this version (bundles exported from it still load)")
    return payload


def build_model(clip: FrozenClip, class_embeddings: torch.Tensor, n_domains: int,
                prompts: PromptConfig, class_names: Sequence[str] = ()) -> AduModel:
    """AduModel on the frozen CLIP; with prompts.text_tokens, learned text prompts for
    `class_names` (class_embeddings then only serve zero-shot CLIP)."""
    logit_scale = float(clip.model.logit_scale.exp()) if hasattr(clip.model, "logit_scale") else 100.0
    text_encoder = None
    if prompts.text_tokens > 0:
        text_encoder = PromptedTextEncoder(clip.model, clip.tokenizer, class_names,
                                           prompts.text_tokens, prompts.text_depth)
    return AduModel(clip.model.visual, class_embeddings, logit_scale, n_domains, prompts, text_encoder)


def model_from_checkpoint(payload: dict):
    """Rebuild the trained AduModel (eval mode, CPU) and its frozen CLIP from a checkpoint."""
    clip = load_clip(ClipSpec(**payload["clip"]))
    model = build_model(clip, payload["class_embeddings"], len(payload["domain_names"]),
                        PromptConfig(**payload["prompt_config"]), payload["class_names"])
    model.load_trainable_state_dict(payload["trainable_state"])
    return model.eval(), clip

