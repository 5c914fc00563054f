"""Model sizes by name, random initialisation, and loading OpenAI and open_clip checkpoints.

A size is a JSON file in encoders/configs/ holding OpenAI's CLIP constructor arguments; its file name is the
name as the paper writes it with '/' replaced by '-' ("ViT-B/32" -> ViT-B-32.json).
"""

import json
import re
import warnings
import zipfile
from pathlib import Path

from openwit.errors import InputError

CONFIG_DIR = Path(__file__).with_name("configs")
# Entries of OpenAI's TorchScript state dicts that are attributes, not weights.
TORCHSCRIPT_ATTRIBUTES = ("input_resolution", "context_length", "vocab_size")


def _file_stem(name):
    return name.replace("/", "-")


def _paper_name(stem):
    # ViT-B-32 -> ViT-B/32, ViT-L-14@336px -> ViT-L/14@336px; ResNet and tiny names have no '/'.
    return re.sub(r"^(ViT-[A-Za-z]+)-(\d)", r"\1/\2", stem)


def available_models():
    return sorted(_paper_name(path.stem) for path in CONFIG_DIR.glob("*.json"))


def model_config(name):
    """OpenAI's CLIP constructor arguments for a model name ("RN50", "ViT-B/32"; "ViT-B-32" works too)."""
    path = CONFIG_DIR / f"{_file_stem(name)}.json"
    if not path.is_file():
        raise InputError(f"unknown model {name!r}: expected one of {', '.join(available_models())}")
    return json.loads(path.read_text())


def create(name, **overrides):
    """A randomly initialised CLIP of the named size; overrides replace config entries (e.g. vocab_size for a
    tokenizer trained from scratch)."""
    from encoders.clip import CLIP

    config = model_config(name)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise InputError(f"unknown model config keys {unknown}: expected some of {sorted(config)}")
    config.update(overrides)
    return CLIP(**config)


def read_state_dict(path):
    """The OpenAI-layout state dict in a checkpoint file: an OpenAI TorchScript archive, a plain state dict
    (OpenAI's or open_clip's), or a checkpoint dict with "state_dict" (open_clip's training checkpoints, with
    the "module." prefix DistributedDataParallel adds)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        if _is_torchscript(path):
            # OpenAI ships TorchScript archives; torch.jit.load reads them without running pickled Python.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(
            f"{path}: not a TorchScript archive nor a checkpoint of tensors ({e}); a training checkpoint holding "
            "other Python objects loads with training.checkpoint.load_model"
        ) from e
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not state_dict:
        raise InputError(f"{path}: expected a state dict (names -> tensors), found {type(state_dict).__name__}")
    state_dict = {_strip_module(k): v for k, v in state_dict.items() if k not in TORCHSCRIPT_ATTRIBUTES}
    return state_dict


def _is_torchscript(path):
    """TorchScript archives are zip files like torch.save's, but they carry the model's code."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _strip_module(key):
    return key[len("module."):] if key.startswith("module.") else key


def config_from_state_dict(state_dict):
    """OpenAI's CLIP constructor arguments read off the shapes of a state dict (OpenAI's build_model)."""
    vit = "visual.proj" in state_dict
    if vit:
        vision_width = state_dict["visual.conv1.weight"].shape[0]
        vision_layers = len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")})
        vision_patch_size = state_dict["visual.conv1.weight"].shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
    else:
        vision_layers = [
            len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{stage}.")}) for stage in (1, 2, 3, 4)
        ]
        vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_patch_size = None
        image_resolution = grid * 32
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return {
        "embed_dim": state_dict["text_projection"].shape[1],
        "image_resolution": image_resolution,
        "vision_layers": vision_layers,
        "vision_width": vision_width,
        "vision_patch_size": vision_patch_size,
        "context_length": state_dict["positional_embedding"].shape[0],
        "vocab_size": state_dict["token_embedding.weight"].shape[0],
        "transformer_width": transformer_width,
        "transformer_heads": transformer_width // 64,
        "transformer_layers": len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
    }


def load(name, path=None, device="cpu"):
    """A CLIP of the named size in eval mode: random init when path is None, else the checkpoint's weights.

    A checkpoint whose vocabulary or context length differs from the named size's (a model trained from
    scratch with its own tokenizer) loads with those two read off its shapes; any other mismatch is an error.
    """
    if path is None:
        return create(name).to(device).eval()
    state_dict = read_state_dict(path)
    config = model_config(name)
    try:
        found = config_from_state_dict(state_dict)
    except (KeyError, IndexError) as e:
        raise InputError(f"{path}: not a CLIP state dict in OpenAI's layout (missing {e})") from e
    overrides = {key: found[key] for key in ("vocab_size", "context_length") if found[key] != config[key]}
    model = create(name, **overrides)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise InputError(f"{path}: the weights do not fit {name} ({e}); pick the model name they were trained as")
    return model.to(device).eval()
