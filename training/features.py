"""Frozen CLIP features of an eval set's images and captions, for zero-shot and the linear probe.

Eval sets are read by the loaders of `openwit eval-index` (dedup/eval_sets.py: image folders, WebDataset
tars, Parquet, CSV), so an item has the same id here as in the eval index and in the build's overlap
records, which is what lets the overlap report join predictions to overlaps.
"""

import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from dedup.eval_sets import decode, parse_eval_set_arg, read_eval_set
from openwit.errors import InputError


@dataclass
class EvalSet:
    name: str
    ids: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    captions: list[tuple[str, ...]] = field(default_factory=list)
    images: list = field(default_factory=list)  # PIL images, decoded once
    skipped: Counter = field(default_factory=Counter)  # reason -> items that could not be used


def load_eval_set(spec: str) -> EvalSet:
    """NAME=PATH -> the decoded items; unreadable or undecodable items are counted and left out."""
    name, path = parse_eval_set_arg(spec)
    out = EvalSet(name)
    for item in read_eval_set(path):
        try:
            if item.error:
                raise ValueError(item.error)
            image = decode(item.image_bytes)
        except ValueError as e:
            out.skipped[str(e).split(":")[0]] += 1
            continue
        out.ids.append(item.eval_id)
        out.labels.append(item.label)
        out.captions.append(item.captions)
        out.images.append(image)
    if not out.ids:
        raise InputError(f"--eval-set {spec!r}: no usable image ({dict(out.skipped) or 'empty'})")
    if out.skipped:
        print(f"{name}: left out {sum(out.skipped.values())} unusable items {dict(out.skipped)}", file=sys.stderr)
    return out


def image_preprocess(model):
    """CLIP's eval transform at the model's resolution (resize shorter side, centre crop, normalise)."""
    import encoders

    return encoders.preprocess(model.visual.input_resolution)


@torch.no_grad()
def image_features(model, images: list, batch_size: int = 64, device="cpu") -> np.ndarray:
    """L2-normalised image embeddings, [n, embed_dim] float32."""
    preprocess = image_preprocess(model)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(im) for im in images[start:start + batch_size]]).to(device)
        chunks.append(model.encode_image(batch, normalize=True).float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, model.text_projection.shape[1]), np.float32)


def tokenize(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    """Token ids at the model's context length (a caption cut short still ends with end-of-text)."""
    from training.train import TextTokenizer

    return TextTokenizer(tokenizer, context_length)(texts)


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str], batch_size: int = 256, device="cpu") -> torch.Tensor:
    """L2-normalised text embeddings, [n, embed_dim] float32 on the CPU."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(tokenizer, texts[start:start + batch_size], model.context_length).to(device)
        chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(chunks)
