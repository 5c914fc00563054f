"""CLIP: an image tower and a text tower projected into one space (Radford et al. 2021).

The constructor takes OpenAI's arguments, which are also the keys of encoders/configs/*.json, so a model size is
a config file and never a code branch. The image tower is a ModifiedResNet when `vision_layers` is a list of four
stage depths and a Vision Transformer when it is a single depth.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from encoders.modified_resnet import ModifiedResNet
from encoders.text_transformer import TextTransformer
from encoders.vision_transformer import VisionTransformer

# The logit scale (inverse temperature) starts at 1/0.07 and is clamped at 100 so training cannot blow it up.
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = 100.0


class CLIP(TextTransformer):
    def __init__(
        self,
        embed_dim,
        image_resolution,
        vision_layers,
        vision_width,
        vision_patch_size,
        context_length,
        vocab_size,
        transformer_width,
        transformer_heads,
        transformer_layers,
    ):
        super().__init__(embed_dim, context_length, vocab_size, transformer_width, transformer_heads, transformer_layers)
        if isinstance(vision_layers, (tuple, list)):
            # OpenAI's head counts: 64 channels per head of the attention pool (ResNet) or the ViT.
            self.visual = ModifiedResNet(
                layers=vision_layers,
                output_dim=embed_dim,
                heads=vision_width * 32 // 64,
                input_resolution=image_resolution,
                width=vision_width,
            )
        else:
            self.visual = VisionTransformer(
                input_resolution=image_resolution,
                patch_size=vision_patch_size,
                width=vision_width,
                layers=vision_layers,
                heads=vision_width // 64,
                output_dim=embed_dim,
            )
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
        self.init_text_parameters()
        self.visual.init_parameters()

    @property
    def dtype(self):
        return self.text_projection.dtype

    def encode_image(self, images, normalize=False):
        """images: FloatTensor [batch, 3, H, W] from encoders.preprocess -> features [batch, embed_dim]."""
        x = self.visual(images)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images, tokens):
        """-> (image features, text features, logit scale): features L2-normalised, the scale exp'd and clamped,
        as the contrastive loss takes them (logits = scale * image_features @ text_features.T)."""
        image_features = self.encode_image(images, normalize=True)
        text_features = self.encode_text(tokens, normalize=True)
        return image_features, text_features, self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
