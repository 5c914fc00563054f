"""CLIP's text encoder: a causal Transformer over BPE tokens, read out at the end-of-text token.

OpenAI's checkpoints keep the text tower's parameters at the top level of the model (`token_embedding`,
`positional_embedding`, `transformer.*`, `ln_final`, `text_projection`), not under a prefix. So the text
tower is a base class of `CLIP` rather than a submodule: its parameters land under exactly those names.
"""

import torch
import torch.nn.functional as F
from torch import nn

from encoders.transformer import LayerNorm, Transformer


class TextTransformer(nn.Module):
    def __init__(self, embed_dim, context_length, vocab_size, width, heads, layers):
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, causal=True)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))

    def init_text_parameters(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_parameters()
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)

    def encode_text(self, tokens, normalize=False):
        """tokens: LongTensor [batch, context_length] from the tokenizer -> features [batch, embed_dim]."""
        dtype = self.text_projection.dtype
        # The feature is read at the end-of-text token, the largest id in each row (the tokenizer puts its
        # two special tokens last in the vocabulary). Causal attention makes it a summary of the whole text,
        # and blind to the padding after it: so the padding columns after the batch's last end token are cut
        # before the Transformer. The same result; a caption of 15 tokens costs 16 positions instead of 77.
        end = tokens.argmax(dim=-1)
        length = int(end.max()) + 1
        tokens = tokens[:, :length]
        x = self.token_embedding(tokens).to(dtype) + self.positional_embedding[:length].to(dtype)
        x = self.transformer(x)
        # ln_final acts on each position alone: applied to the end tokens only.
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), end]) @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x
