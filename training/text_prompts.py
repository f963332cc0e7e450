"""Learned text prompts (IVLP, as in the authors' code): the frozen open_clip text tower
with learned context tokens and deep text prompts, giving the class text features.

Prompt layout: [SOS, ctx_1..ctx_n, class name tokens, ".", EOT]. The context vectors replace
the token embeddings of n placeholder words (positional embeddings are added on top, as for
any token); in text blocks 2..depth the hidden states at those n positions are replaced by
that block's deep prompts. Pooling and projection are open_clip's own, so with the context
set to the embeddings of "a photo of a" and depth 1 the features equal `encode_text`.
"""
import logging
from typing import Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

CONTEXT_INIT = "a photo of a"  # the authors initialise from it when it has enough words
PLACEHOLDER = "X"


def text_block_count(clip_model: nn.Module) -> int:
    transformer = getattr(clip_model, "transformer", None)
    if transformer is None or not hasattr(clip_model, "token_embedding"):
        raise ValueError("learned text prompts need an open_clip CLIP with its own text "
                         "transformer (not a CustomTextCLIP / Hugging Face text tower)")
    return len(transformer.resblocks)


class PromptedTextEncoder(nn.Module):
    """Frozen open_clip text tower + learned context and deep text prompts.

    forward() -> unnormalised class text features [C, E], recomputed from the prompts.
    """

    def __init__(self, clip_model: nn.Module, tokenizer, class_names: Sequence[str],
                 tokens: int, depth: int):
        super().__init__()
        n_blocks = text_block_count(clip_model)
        if not clip_model.transformer.batch_first:
            raise ValueError("open_clip text transformer must run batch_first")
        if tokens < 1 or not 1 <= depth <= n_blocks:
            raise ValueError(f"text prompts need >= 1 token and a depth between 1 and the "
                             f"{n_blocks} text blocks (got {tokens} tokens, depth {depth})")
        self.tokens, self.depth = tokens, depth
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.positional_embedding = clip_model.positional_embedding
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.pool_type = getattr(clip_model, "text_pool_type", "argmax")
        self.eos_token_id = getattr(clip_model, "text_eos_id", None)
        for part in (self.transformer, self.ln_final, self.positional_embedding, self.text_projection):
            if part is not None:
                part.requires_grad_(False)  # the text tower stays frozen; only prompts learn

        init_words = CONTEXT_INIT.split()
        use_init = tokens <= len(init_words)
        prefix_words = init_words[:tokens] if use_init else [PLACEHOLDER] * tokens
        names = [name.replace("_", " ") for name in class_names]
        tokenized = tokenizer([" ".join(prefix_words + [name]) + "." for name in names])
        if (tokenized[:, -1] != 0).any():
            too_long = [n for n, row in zip(names, tokenized) if row[-1] != 0]
            raise ValueError(f"text prompt with {tokens} context tokens does not fit the text "
                             f"encoder's {tokenized.shape[1]}-token context for class(es) {too_long}")
        width = clip_model.token_embedding.embedding_dim
        with torch.no_grad():
            embedded = clip_model.token_embedding(tokenized).float()
        self.register_buffer("tokenized", tokenized, persistent=False)
        self.register_buffer("token_prefix", embedded[:, :1], persistent=False)            # SOS
        self.register_buffer("token_suffix", embedded[:, 1 + tokens:], persistent=False)  # name . EOT
        # The authors: context from "a photo of a" when it has enough words, else N(0, 0.02).
        context = embedded[0, 1:1 + tokens].clone() if use_init else torch.randn(tokens, width) * 0.02
        self.context = nn.Parameter(context)
        self.deep_prompts = nn.Parameter(torch.randn(depth - 1, tokens, width) * 0.02)

    def forward(self) -> torch.Tensor:
        from open_clip.model import text_global_pool

        n_classes = self.token_prefix.shape[0]
        cast = self.transformer.get_cast_dtype()
        context = self.context.unsqueeze(0).expand(n_classes, -1, -1)
        x = torch.cat([self.token_prefix, context, self.token_suffix], dim=1).to(cast)
        x = x + self.positional_embedding.to(cast)
        for index, block in enumerate(self.transformer.resblocks):
            if 1 <= index < self.depth:
                deep = self.deep_prompts[index - 1].unsqueeze(0).expand(n_classes, -1, -1)
                x = torch.cat([x[:, :1], deep.to(x.dtype), x[:, 1 + self.tokens:]], dim=1)
            x = block(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, self.tokenized, self.pool_type, eos_token_id=self.eos_token_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection
