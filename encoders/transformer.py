"""The Transformer blocks both towers share: pre-LN residual attention blocks with OpenAI's parameter names.

Parameter names follow OpenAI's CLIP (`attn.in_proj_weight`, `attn.out_proj`, `ln_1`, `mlp.c_fc`, `mlp.c_proj`,
`ln_2`), so checkpoints load unchanged. The computation is batch-first and uses
`F.scaled_dot_product_attention`, which picks a fused kernel (flash / memory-efficient) on CPU and GPU, and
takes causality as a flag instead of a mask tensor that would be built and added on every call.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back: OpenAI ships fp16 weights, where the statistics overflow."""

    def forward(self, x):
        dtype = x.dtype
        if dtype == torch.float32:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = self.weight.float() if self.weight.dtype != torch.float32 else self.weight
        bias = self.bias.float() if self.bias.dtype != torch.float32 else self.bias
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP weights were trained with."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention holding nn.MultiheadAttention's parameters (one packed q/k/v projection)."""

    def __init__(self, width, heads):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x, causal=False):
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        # [batch, length, 3, heads, head_width] -> three [batch, heads, length, head_width]
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.attn = Attention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = LayerNorm(width)

    def forward(self, x, causal=False):
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks over batch-first [batch, length, width] sequences."""

    def __init__(self, width, layers, heads, causal=False):
        super().__init__()
        self.width = width
        self.layers = layers
        # The text tower is causal (each token sees only those before it); the image tower is not.
        self.causal = causal
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def init_parameters(self):
        """OpenAI's initialisation: std shrinks with width and, for the residual outputs, with depth."""
        proj_std = (self.width**-0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, x):
        for block in self.resblocks:
            x = block(x, causal=self.causal)
        return x
