"""The bundled CLIP: image encoders (ModifiedResNet, ViT), text Transformer and BPE tokenizer."""
