"""CLIP's image preprocessing, the one function the training loader and the evaluation share.

Eval: resize the shorter side to the model's resolution (bicubic), crop the centre square, scale to [0, 1] and
normalise with CLIP's mean and std. Train: a random crop of 90-100% of the area at an aspect ratio in [3/4, 4/3],
resized to the resolution (bicubic), then the same normalisation; open_clip's training augmentation.
Pillow does the resampling, so results equal open_clip's torchvision transforms on Pillow images.
"""

import math

import numpy as np
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_SCALE = (0.9, 1.0)
TRAIN_RATIO = (3 / 4, 4 / 3)


def resize_shorter_side(image, size):
    """Bicubic resize so the shorter side is `size`; the longer keeps the aspect ratio (rounded down)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size == image.size:
        return image
    return image.resize(new_size, Image.BICUBIC)


def center_crop(image, size):
    """The centre `size` x `size` square (the image is at least that large after resize_shorter_side)."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def random_crop_box(width, height, generator=None):
    """A random (left, top, right, bottom) covering TRAIN_SCALE of the area at an aspect ratio in TRAIN_RATIO;
    torchvision's RandomResizedCrop sampling, drawn from torch's generator, so runs are reproducible by seed."""
    import torch

    area = width * height
    log_ratio = (math.log(TRAIN_RATIO[0]), math.log(TRAIN_RATIO[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*TRAIN_SCALE, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio, generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return left, top, left + w, top + h
    # Ten misses (a very elongated image): the largest centred crop within the ratio range.
    if width / height < TRAIN_RATIO[0]:
        w, h = width, int(round(width / TRAIN_RATIO[0]))
    elif width / height > TRAIN_RATIO[1]:
        w, h = int(round(height * TRAIN_RATIO[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def to_normalized_tensor(image):
    """RGB uint8 Pillow image -> FloatTensor [3, H, W], scaled to [0, 1] and normalised with MEAN and STD."""
    import torch

    array = np.array(image.convert("RGB"), dtype=np.uint8, copy=True)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


class Preprocess:
    """callable(PIL.Image) -> FloatTensor [3, size, size]. A class, so DataLoader workers can pickle it."""

    def __init__(self, size, train=False):
        self.size = size
        self.train = train

    def __call__(self, image):
        if self.train:
            box = random_crop_box(*image.size)
            image = image.crop(box).resize((self.size, self.size), Image.BICUBIC)
        else:
            image = center_crop(resize_shorter_side(image, self.size), self.size)
        return to_normalized_tensor(image)

    def __repr__(self):
        return f"Preprocess(size={self.size}, train={self.train})"
