"""Checkpoints: written atomically, resumed exactly, and loadable without the trainer (`load_model`).

A checkpoint is one torch.save dict (CLIP_CONTRACT.md): model name and overrides, the model state dict in
OpenAI's layout (so open_clip and OpenAI's code load it), optimizer, grad scaler, epoch and step, the data
position (which raw samples each loader worker had consumed), RNG states, the command's args, the tokenizer.
"""

import glob
import os
import random
import re

import numpy as np
import torch

from openwit.errors import InputError

NAME = "epoch_{epoch}_step_{step}.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str, checkpoint: dict) -> None:
    """Write to a temporary name beside `path`, flush to disk, then rename: a crash mid-write never leaves a
    half checkpoint where `--resume latest` would find it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def latest(folder: str) -> str | None:
    """The checkpoint of the furthest step in `folder` (names carry epoch and global step)."""
    found = []
    for path in glob.glob(os.path.join(folder, "epoch_*_step_*.pt")):
        m = re.search(r"epoch_(\d+)_step_(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), path))
    return max(found)[2] if found else None


def read(path: str, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError as e:
        raise InputError(f"checkpoint {path!r} does not exist") from e


def load_model(path: str, device="cpu", model_name: str | None = None):
    """(model in eval mode, tokenizer) from a checkpoint `openwit train` wrote; or, given `model_name`, any
    weights `encoders.load` reads (OpenAI archive, OpenAI/open_clip state dict, open_clip checkpoint)."""
    import encoders

    if model_name is not None:
        model = encoders.load(model_name, path, device=device)
        return model.eval(), encoders.Tokenizer()
    checkpoint = read(path)
    if "model_name" not in checkpoint:
        raise InputError(f"{path!r} is not a checkpoint of `openwit train` (no model_name); pass the model "
                         "name to load other weights (e.g. load_model(path, model_name='RN50'))")
    model = encoders.create(checkpoint["model_name"], **checkpoint.get("model_overrides", {}))
    model.load_state_dict(checkpoint["state_dict"])
    tokenizer = encoders.Tokenizer(checkpoint.get("tokenizer"))
    return model.to(device).eval(), tokenizer
