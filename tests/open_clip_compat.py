"""Import open_clip (a development dependency) beside the CPU build of torch.

open_clip imports torchvision; the torchvision 0.28 wheels reachable here are CUDA builds whose compiled
operators do not load beside torch 2.13+cpu, and its import then fails registering fake kernels
("operator torchvision::nms does not exist"). open_clip never calls those detection operators, so declaring
their schemas (without kernels) first is enough for the import to succeed.
"""

import functools

# The operators torchvision registers fake (meta) kernels for unconditionally at import.
TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


@functools.lru_cache()
def import_open_clip():
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        # The failed import left partial torchvision modules behind: forget them, declare the schemas, retry.
        import sys

        for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[module]
        library = torch.library.Library("torchvision", "DEF")
        for schema in TORCHVISION_SCHEMAS:
            library.define(schema)
        import_open_clip.library = library  # a Library unregisters its operators when garbage collected
        import torchvision  # noqa: F401
    import open_clip

    return open_clip


def open_clip_config(config):
    """open_clip's model config for OpenAI's CLIP constructor arguments (encoders.model_config)."""
    return {
        "embed_dim": config["embed_dim"],
        "quick_gelu": True,  # OpenAI's activation, which our Transformer uses
        "vision_cfg": {
            "image_size": config["image_resolution"],
            "layers": config["vision_layers"],
            "width": config["vision_width"],
            "patch_size": config["vision_patch_size"],
        },
        "text_cfg": {
            "context_length": config["context_length"],
            "vocab_size": config["vocab_size"],
            "width": config["transformer_width"],
            "heads": config["transformer_heads"],
            "layers": config["transformer_layers"],
        },
    }


def open_clip_model(name, device="cpu"):
    """open_clip's CLIP of one of our sizes (random init, eval mode), registered under "openwit-<name>" so the
    tiny sizes build too; nothing is downloaded (pretrained=None)."""
    import encoders

    open_clip = import_open_clip()
    registered = "openwit-" + name.replace("/", "-")
    open_clip.factory._MODEL_CONFIGS[registered] = open_clip_config(encoders.model_config(name))
    return open_clip.create_model(registered, pretrained=None, device=device).eval()
