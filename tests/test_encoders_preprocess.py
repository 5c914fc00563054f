"""encoders.preprocess equals open_clip's preprocess (torchvision on Pillow images), eval and train."""

import numpy as np
import pytest
import torch
from PIL import Image

import encoders
from open_clip_compat import import_open_clip


def image(width, height, mode="RGB", seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA").convert(mode)


def open_clip_transform(size, train):
    return import_open_clip().image_transform(size, is_train=train)


@pytest.mark.parametrize(
    "width, height, mode",
    [(301, 137, "RGB"), (137, 301, "RGB"), (64, 64, "RGB"), (40, 30, "RGB"), (500, 64, "L"), (97, 203, "RGBA"),
     (120, 90, "P"), (70, 70, "CMYK"), (65, 200, "I;16")],
)
def test_eval_equals_open_clip(width, height, mode):
    picture = image(width, height, mode)
    for size in (64, 224):
        expected = open_clip_transform(size, train=False)(picture)
        got = encoders.preprocess(size)(picture)
        assert got.shape == (3, size, size) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_train_equals_open_clip_with_the_same_seed():
    theirs = open_clip_transform(64, train=True)
    ours = encoders.preprocess(64, train=True)
    for seed, (width, height) in enumerate([(300, 200), (64, 64), (1000, 50), (50, 1000)]):
        picture = image(width, height, seed=seed)
        torch.manual_seed(seed)
        expected = theirs(picture)
        torch.manual_seed(seed)
        got = ours(picture)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_by_model_name_and_pickles():
    import pickle

    transform = encoders.preprocess("ViT-L/14@336px")
    assert transform.size == 336 and not transform.train
    assert pickle.loads(pickle.dumps(transform))(image(50, 40)).shape == (3, 336, 336)
    assert encoders.MEAN == (0.48145466, 0.4578275, 0.40821073) and encoders.STD == (0.26862954, 0.26130258, 0.27577711)
