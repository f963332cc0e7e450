"""Loading a frozen open_clip model: a built-in name (+ pretrained tag) or a JSON config
plus a local checkpoint, exactly as open_clip itself does it."""
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

log = logging.getLogger(__name__)


@dataclass
class ClipSpec:
    """How to rebuild the frozen CLIP. Stored in checkpoints so export can rebuild it."""
    name: str                            # open_clip model name (built-in or from model_config)
    pretrained: Optional[str] = None     # tag (e.g. "openai") or path to a checkpoint file
    model_config: Optional[dict] = None  # contents of the JSON config, for local models

    @classmethod
    def from_args(cls, clip: Optional[str], pretrained: Optional[str],
                  model_config: Optional[str]) -> "ClipSpec":
        if pretrained and Path(pretrained).is_file():
            pretrained = str(Path(pretrained).resolve())  # checkpoints must work from any cwd
        if model_config:
            path = Path(model_config)
            if not path.is_file():
                raise FileNotFoundError(f"model config not found: {path}")
            try:
                config = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"model config {path} is not valid JSON: {error}") from None
            missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg")
                       if not isinstance(config, dict) or k not in config]
            if missing:
                raise ValueError(f"model config {path} is not an open_clip model config: it lacks "
                                 f"{', '.join(missing)} (see open_clip's model_configs/*.json)")
            return cls(name=clip or path.stem, pretrained=pretrained, model_config=config)
        if not clip:
            raise ValueError("give either --clip NAME (with --pretrained TAG) or --model-config JSON")
        return cls(name=clip, pretrained=pretrained)


@dataclass
class FrozenClip:
    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    spec: ClipSpec


def load_clip(spec: ClipSpec) -> FrozenClip:
    import open_clip

    if spec.model_config is not None:
        open_clip.factory._MODEL_CONFIGS[spec.name] = spec.model_config
    pretrained = spec.pretrained
    if pretrained and Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"} \
            and not Path(pretrained).is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {pretrained}")
    if not pretrained:
        log.warning("no pretrained weights for %s: its weights are random (a test set-up, not a CLIP; "
                    "pass --pretrained TAG or --checkpoint FILE)", spec.name)
    try:
        model = open_clip.create_model(spec.name, pretrained=pretrained)
    except Exception as error:  # torch, pickle and open_clip raise many types for a bad file
        detail = str(error) if len(str(error)) < 300 else str(error)[:300] + " ..."
        raise ValueError(f"could not load open_clip model {spec.name!r} (pretrained={pretrained!r}): "
                         f"{type(error).__name__}: {detail}") from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return FrozenClip(model, open_clip.get_tokenizer(spec.name), int(image_size),
                      tuple(mean), tuple(std), spec)


@torch.no_grad()
def class_text_embeddings(clip: FrozenClip, class_names: Sequence[str],
                          template: str = "a photo of a {}.") -> torch.Tensor:
    """Fixed text prompts through the frozen text encoder, L2-normalised: [C, E]."""
    prompts = [template.format(name.replace("_", " ")) for name in class_names]
    tokens = clip.tokenizer(prompts)
    return torch.nn.functional.normalize(clip.model.encode_text(tokens).float(), dim=-1)
