"""CLIP's Vision Transformer image encoder (Radford et al. 2021, sec. 2.4), with OpenAI's parameter names.

A pre-LN ViT: patches by a strided convolution, a class token, learned positions, an extra LayerNorm (`ln_pre`)
before the Transformer, and the class token's output through `ln_post` and a linear projection (`proj`).
"""

import torch
from torch import nn

from encoders.transformer import LayerNorm, Transformer


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"image resolution {input_resolution} is not a multiple of patch size {patch_size}")
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def init_parameters(self):
        self.transformer.init_parameters()

    def forward(self, x):
        x = self.conv1(x.to(self.conv1.weight.dtype))  # [batch, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [batch, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj
