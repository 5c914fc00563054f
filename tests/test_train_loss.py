"""CLIP's loss against its formula (and open_clip's ClipLoss when open_clip imports), the schedule, and the
weight-decay exclusions of the optimiser."""

import math

import numpy as np
import pytest
import torch

from training import schedule
from training.loss import ClipLoss
from training.train import param_groups

pytestmark = pytest.mark.timeout(60)


def reference_loss(image, text, scale):
    """The paper's pseudo-code in float64 numpy: symmetric cross-entropy over scaled cosine similarities."""
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image @ text.T

    def ce(rows):
        rows = rows - rows.max(axis=1, keepdims=True)
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    return (ce(logits) + ce(logits.T)) / 2


def features(n=12, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    text[: n // 2] += 2 * image[: n // 2]  # half the pairs alike, so the loss is not just log(n)
    return image, text


def test_loss_equals_the_formula():
    image, text = features()
    scale = 1 / 0.07
    got = ClipLoss()(torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1),
                     torch.tensor(scale))
    assert float(got) == pytest.approx(reference_loss(image.double().numpy(), text.double().numpy(), scale),
                                       rel=1e-5)


def test_loss_equals_open_clip():
    compat = pytest.importorskip("open_clip_compat", reason="open_clip needs tests/open_clip_compat.py")
    try:
        open_clip = compat.import_open_clip()
    except ImportError:
        pytest.skip("open_clip (a development dependency) is not installed")
    image, text = (torch.nn.functional.normalize(f, dim=-1) for f in features(seed=3))
    scale = torch.tensor(20.0)
    assert float(ClipLoss()(image, text, scale)) == pytest.approx(float(open_clip.ClipLoss()(image, text, scale)),
                                                                 rel=1e-6)


def test_cosine_schedule_with_warmup():
    lrs = [schedule.cosine_lr(s, 1.0, warmup=10, total=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5) and lrs[109] < 1e-3
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert math.isclose(schedule.cosine_lr(500, 1.0, 10, 110), 0.0, abs_tol=1e-12)


def test_no_weight_decay_on_gains_biases_embeddings_and_logit_scale():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = torch.nn.Embedding(10, 4)
            self.positional_embedding = torch.nn.Parameter(torch.zeros(5, 4))
            self.proj = torch.nn.Linear(4, 4)
            self.ln_final = torch.nn.LayerNorm(4)
            self.logit_scale = torch.nn.Parameter(torch.ones([]))

    model = Tiny()
    no_decay, decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"proj.weight"} and decay["weight_decay"] == 0.2
    assert {names[id(p)] for p in no_decay["params"]} == {
        "token_embedding.weight", "positional_embedding", "proj.bias", "ln_final.weight", "ln_final.bias",
        "logit_scale"} and no_decay["weight_decay"] == 0.0
