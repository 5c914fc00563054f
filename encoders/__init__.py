"""The bundled CLIP: image encoders (ModifiedResNet, ViT), text Transformer and BPE tokenizer.

Weight-compatible with OpenAI's CLIP (the same state-dict layout) and numerically equal to open_clip's models.

    model = encoders.load("ViT-B/32", "ViT-B-32.pt")   # or path=None for random init
    image_features = model.encode_image(torch.stack([encoders.preprocess("ViT-B/32")(img)]))
    text_features = model.encode_text(encoders.tokenize(["a photo of a dog"]))

Torch is imported lazily by the functions that need it, so `import encoders` costs nothing.
"""

from encoders.factory import available_models, create, load, model_config
from encoders.preprocessing import MEAN, STD, Preprocess
from encoders.tokenizer import Tokenizer, tokenize


def preprocess(name_or_size, train=False):
    """callable(PIL.Image) -> FloatTensor [3, H, W] at the model's resolution (a name) or a size in pixels."""
    size = name_or_size if isinstance(name_or_size, int) else model_config(name_or_size)["image_resolution"]
    return Preprocess(size, train=train)


def train_tokenizer(captions, vocab_size, out_path):
    """Learn BPE merges for a vocabulary of vocab_size tokens from captions; write them where Tokenizer loads.
    (The module is train_bpe, not train_tokenizer, so importing it cannot shadow this function.)"""
    from encoders.train_bpe import train_tokenizer as train

    return train(captions, vocab_size, out_path)


__all__ = [
    "MEAN",
    "STD",
    "Preprocess",
    "Tokenizer",
    "available_models",
    "create",
    "load",
    "model_config",
    "preprocess",
    "tokenize",
    "train_tokenizer",
]
