"""CLIP's loss: symmetric cross-entropy over the similarity matrix of a batch, with a learned temperature.

Across ranks, features are all-gathered so every rank scores its samples against the whole global batch (the
negatives that make contrastive learning work). As open_clip: with `gather_with_grad` the gather passes
gradients back to the rank that made each feature, and with `local_loss` a rank scores only its own rows
(less memory, the same gradients when gathered with grad).
"""

import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn.functional as F


def gather_features(image_features, text_features, gather_with_grad: bool = True, local_loss: bool = False):
    """All ranks' features, concatenated in rank order."""
    if gather_with_grad:
        images = torch.cat(torch.distributed.nn.all_gather(image_features), dim=0)
        texts = torch.cat(torch.distributed.nn.all_gather(text_features), dim=0)
        return images, texts
    world, rank = dist.get_world_size(), dist.get_rank()
    images = [torch.zeros_like(image_features) for _ in range(world)]
    texts = [torch.zeros_like(text_features) for _ in range(world)]
    dist.all_gather(images, image_features)
    dist.all_gather(texts, text_features)
    if not local_loss:
        # Without grad through the gather, only this rank's own slice carries gradient: put it back.
        images[rank], texts[rank] = image_features, text_features
    return torch.cat(images, dim=0), torch.cat(texts, dim=0)


class ClipLoss(torch.nn.Module):
    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True):
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad

    def logits(self, image_features, text_features, logit_scale):
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed:
            per_image = logit_scale * image_features @ text_features.T
            return per_image, per_image.T, 0
        all_images, all_texts = gather_features(image_features, text_features, self.gather_with_grad,
                                                self.local_loss)
        if self.local_loss:
            # This rank's rows only; their positives sit at offset rank * local batch in the gathered columns.
            return (logit_scale * image_features @ all_texts.T, logit_scale * text_features @ all_images.T,
                    dist.get_rank() * image_features.shape[0])
        per_image = logit_scale * all_images @ all_texts.T
        return per_image, per_image.T, 0

    def forward(self, image_features, text_features, logit_scale):
        per_image, per_text, offset = self.logits(image_features, text_features, logit_scale)
        labels = torch.arange(per_image.shape[0], device=per_image.device) + offset
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2
