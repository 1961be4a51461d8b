"""PyTorch helpers for the zoo's training and build scripts (needs the ``torch`` extra).

qsweep never imports this module at run time; only ``train_*.py`` and
``build_*.py`` scripts do.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from quantizer.coremltools_quiet import coremltools


def seed_everything(seed: int, threads: int = 2) -> None:
    """Deterministic torch on CPU with a fixed thread count."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
                     batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
                     augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
                     log: Callable[[str], None] = print) -> dict:
    """Adam + cross-entropy with a cosine learning-rate schedule; returns a training record."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = xt[idx], yt[idx]
            if augment is not None:
                xb = augment(xb, gen)
            opt.zero_grad()
            out = model(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f}, train acc {correct / total:.4f}, "
            f"{time.perf_counter() - start:.0f}s")
    model.eval()
    return {"epochs": epochs, "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay,
            "optimizer": "Adam + OneCycleLR", "train_seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Eval-mode outputs for ``x`` as a float32 numpy array."""
    model.eval()
    outs = [model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32)).numpy()
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def convert(model: nn.Module, input_name: str, sample_shape: tuple[int, ...], output_name: str,
            short_description: str):
    """Trace ``model`` (eval mode, batch 1) and convert it with ``convert_to="neuralnetwork"``.

    Returns the spec with named input/output and a short description.
    """
    ct = coremltools()
    model.eval()
    example = torch.zeros((1,) + tuple(sample_shape), dtype=torch.float32)
    traced = torch.jit.trace(model, example)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name=input_name, shape=example.shape)],
                         outputs=[ct.TensorType(name=output_name)], convert_to="neuralnetwork")
    spec = mlmodel.get_spec()
    spec.description.metadata.shortDescription = short_description
    return spec


class WithSoftmax(nn.Module):
    """``model`` followed by a softmax over classes (what the exported zoo model ends in)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.model(x))


def convert_module(module: nn.Module, example_inputs: Mapping[str, np.ndarray], output_names: Sequence[str]):
    """Trace a pretrained module (eval mode) on named example inputs and convert it to a neuralnetwork spec.

    Inputs keep their example shapes (batch 1) and names; outputs get ``output_names``
    in the module's return order. The conversion date coremltools stamps into the
    metadata is removed, so converting on another day gives the same bytes.
    """
    ct = coremltools()
    module = module.eval()
    ex = tuple(torch.from_numpy(np.asarray(v, dtype=np.float32)) for v in example_inputs.values())
    with torch.no_grad():
        traced = torch.jit.trace(module, ex if len(ex) > 1 else ex[0])
    ml = ct.convert(traced, convert_to="neuralnetwork",
                    inputs=[ct.TensorType(name=k, shape=tuple(np.asarray(v).shape)) for k, v in example_inputs.items()],
                    outputs=[ct.TensorType(name=n) for n in output_names])
    spec = ml.get_spec()
    spec.description.metadata.userDefined.pop("com.github.apple.coremltools.conversion_date", None)
    return spec


@torch.no_grad()
def run(module: nn.Module, *arrays: np.ndarray, batch_size: int = 1):
    """``module`` on ``arrays`` (samples in dim 0) in eval mode, ``batch_size`` samples per call.

    Returns one float32 array per module output (a tuple when the module returns several).
    """
    module.eval()
    n = arrays[0].shape[0]
    parts: list[list[np.ndarray]] = []
    for s in range(0, n, batch_size):
        out = module(*(torch.from_numpy(np.ascontiguousarray(a[s:s + batch_size])) for a in arrays))
        out = out if isinstance(out, tuple) else (out,)
        if not parts:
            parts = [[] for _ in out]
        for p, o in zip(parts, out):
            p.append(o.numpy().astype(np.float32))
    joined = tuple(np.concatenate(p) for p in parts)
    return joined if len(joined) > 1 else joined[0]
