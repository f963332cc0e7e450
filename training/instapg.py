"""InstaPG: the instance-wise prompt generator of ADU.

A cross-attention block whose queries are the learnable prompt tokens of one layer and
whose keys/values are that image's patch tokens (CLS excluded), so every image gets its
own prompts. Structure as in the authors' code: pre-LayerNorm on queries and on K/V,
`q = LN1(q); kv = LN2(kv); x = MHA(q, kv, kv) + q; x = LN_post(x); out = FFN(x) + x`
(the residuals add the *normed* queries and the *post-normed* x, as the authors do).
"""
import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class InstaPG(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_query = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_post = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * mlp_ratio), QuickGELU(), nn.Linear(width * mlp_ratio, width))

    def forward(self, prompts: torch.Tensor, patch_tokens: torch.Tensor) -> torch.Tensor:
        """prompts [P, W] (shared), patch_tokens [N, L, W] -> per-image prompts [N, P, W]."""
        queries = prompts.unsqueeze(0).expand(patch_tokens.shape[0], -1, -1)
        queries = self.norm_query(queries)
        kv = self.norm_kv(patch_tokens)
        # need_weights=False keeps the math path identical in train, eval and ONNX export.
        attended, _ = self.attention(queries, kv, kv, need_weights=False)
        x = self.norm_post(attended + queries)
        return self.mlp(x) + x
