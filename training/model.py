"""The ADU model: a frozen open_clip image encoder with deep visual prompts and InstaPG,
class text features (from learned text prompts, or fixed), and a linear domain classifier.

Token layout inside the transformer: [CLS, patches..., prompts]. In block i < depth the
previous prompts are replaced by that layer's prompts (VPT-deep / IVLP); in the InstaPG
block they are generated from the image's patch tokens. After the last prompted block the
prompts travel on unchanged, and they are stripped before open_clip's own pooling, so with
prompts disabled the features equal `clip.encode_image` exactly.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .instapg import InstaPG
from .text_prompts import PromptedTextEncoder

# The paper prompts 9 of ViT-B/16's 12 blocks and puts InstaPG in the 9th.
PAPER_DEPTH_FRACTION = 9 / 12


def default_prompt_depth(n_blocks: int) -> int:
    """Prompted blocks (and InstaPG's block, the last prompted one) for an encoder of
    n_blocks: 3/4 of the depth, rounded half up, never the last block (12 -> 9, 6 -> 5)."""
    if n_blocks < 2:
        return n_blocks
    return max(1, min(n_blocks - 1, math.floor(PAPER_DEPTH_FRACTION * n_blocks + 0.5)))


@dataclass
class PromptConfig:
    tokens: int = 8          # visual prompt tokens per layer (0 disables prompts)
    depth: int = 9           # number of prompted image blocks, from the first
    instapg: bool = False    # generate the prompts of one block per image
    instapg_layer: int = 9   # 1-based block whose prompts InstaPG generates (<= depth)
    text_tokens: int = 0     # learned text context tokens (0: fixed template text features)
    text_depth: int = 0      # prompted text blocks, from the first


class PromptedImageEncoder(nn.Module):
    """open_clip VisionTransformer (frozen) + deep visual prompts (+ InstaPG)."""

    def __init__(self, visual: nn.Module, prompts: PromptConfig):
        super().__init__()
        blocks = visual.transformer.resblocks
        if not hasattr(visual, "_embeds") or not hasattr(visual, "conv1"):
            raise ValueError("ADU needs an open_clip VisionTransformer image tower (a ViT model)")
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError("attentional-pooling ViTs (CoCa) are not supported")
        if not visual.transformer.batch_first:
            raise ValueError("open_clip transformer must run batch_first")
        if prompts.tokens > 0 and not 1 <= prompts.depth <= len(blocks):
            raise ValueError(f"prompt depth {prompts.depth} must be between 1 and the "
                             f"{len(blocks)} blocks of this image encoder")
        if prompts.instapg and not 1 <= prompts.instapg_layer <= prompts.depth:
            raise ValueError(f"InstaPG layer {prompts.instapg_layer} must be a prompted block "
                             f"(1..{prompts.depth})")
        self.visual = visual
        self.config = prompts
        width = visual.conv1.out_channels
        depth = prompts.depth if prompts.tokens > 0 else 0
        # Same initialisation scale as VPT/MaPLe prompt vectors.
        self.prompts = nn.Parameter(torch.randn(depth, prompts.tokens, width) * 0.02)
        heads = blocks[0].attn.num_heads
        self.instapg = InstaPG(width, heads) if (prompts.instapg and depth) else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised NCHW float images -> unnormalised CLIP image embeddings [N, E]."""
        visual = self.visual
        x = visual._embeds(images)
        n_image_tokens = x.shape[1]
        depth = self.prompts.shape[0]
        for index, block in enumerate(visual.transformer.resblocks):
            if index < depth:
                if self.instapg is not None and index == self.config.instapg_layer - 1:
                    layer_prompts = self.instapg(self.prompts[index], x[:, 1:n_image_tokens])
                else:
                    layer_prompts = self.prompts[index].unsqueeze(0).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :n_image_tokens], layer_prompts.to(x.dtype)], dim=1)
            x = block(x)
        pooled, _ = visual._pool(x[:, :n_image_tokens])
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled


class AduModel(nn.Module):
    """Everything ADU trains or needs at inference.

    forward returns class logits (CLIP temperature x cosine similarity to the class text
    features), domain logits (linear head on the normalised embedding) and the normalised
    embeddings. The class text features come from `text_encoder` (learned text prompts,
    recomputed at every call) when there is one, else from `class_embeddings` (fixed
    template embeddings; also what zero-shot CLIP uses). `with_folded_text()` turns the
    learned features into constants for inference and export: no text tower left.
    """

    def __init__(self, visual: nn.Module, class_embeddings: torch.Tensor, logit_scale: float,
                 n_domains: int, prompts: PromptConfig,
                 text_encoder: Optional[PromptedTextEncoder] = None):
        super().__init__()
        self.encoder = PromptedImageEncoder(visual, prompts)
        self.text_encoder = text_encoder
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.domain_head = nn.Linear(class_embeddings.shape[1], n_domains)
        for parameter in self.encoder.visual.parameters():
            parameter.requires_grad_(False)

    def class_text_features(self) -> torch.Tensor:
        """L2-normalised class text features [C, E]."""
        if self.text_encoder is None:
            return self.class_embeddings
        return F.normalize(self.text_encoder().float(), dim=-1)

    def with_folded_text(self) -> "AduModel":
        """This model with the class text features computed once and held as a constant
        (shares the image encoder and domain head). Itself when there are no text prompts."""
        if self.text_encoder is None:
            return self
        with torch.no_grad():
            features = self.class_text_features()
        folded = AduModel(self.encoder.visual, features, float(self.logit_scale),
                          self.domain_head.out_features, PromptConfig(tokens=0, depth=0))
        folded.encoder, folded.domain_head = self.encoder, self.domain_head
        return folded.to(features.device).train(self.training)

    def trainable_state_dict(self) -> dict:
        """Only the learned tensors (prompts, InstaPG, domain head): small checkpoints."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict) -> None:
        missing = set(self.trainable_state_dict()) - set(state)
        unexpected = set(state) - set(self.trainable_state_dict())
        if missing or unexpected:
            raise ValueError(f"checkpoint tensors do not match this model configuration "
                             f"(missing {sorted(missing)}, unexpected {sorted(unexpected)})")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.visual.eval()  # frozen backbone: no dropout / patch dropout ever
        if self.text_encoder is not None:
            self.text_encoder.transformer.eval()
        return self

    def forward(self, images: torch.Tensor) -> dict:
        embeddings = F.normalize(self.encoder(images).float(), dim=-1)
        logits = self.logit_scale * embeddings @ self.class_text_features().t()
        return {
            "logits": logits,
            "domain_logits": self.domain_head(embeddings),
            "embeddings": embeddings,
        }
