"""Peer translations of the recurrent layers and of the control flow the converter's GRU uses:
uni/biDirectionalLSTM (torch's fused LSTM), loop (its condition and body translated layer by
layer and run like the executor does), copy, gather, scatter."""
from __future__ import annotations

import torch

from harness.bench.torch_peer._common import samples, translate, translates, unary, w

_GATES = ("inputGate", "forgetGate", "blockInput", "outputGate")  # i, f, g, o: torch's order too


def _lstm_params(layer, prefix: str, p, h: int, i: int) -> list[torch.Tensor]:
    lp = p.params
    if lp.hasPeepholeVectors or lp.coupledInputAndForgetGate:
        raise NotImplementedError("LSTM with peepholes or a coupled input/forget gate")
    w_ih = torch.cat([w(layer, f"{prefix}{g}WeightMatrix", (h, i)) for g in _GATES])
    w_hh = torch.cat([w(layer, f"{prefix}{g}RecursionMatrix", (h, h)) for g in _GATES])
    b = torch.cat([w(layer, f"{prefix}{g}BiasVector", (h,)) for g in _GATES]) if lp.hasBiasVectors else torch.zeros(4 * h)
    if lp.forgetBias:
        b = b.clone()
        b[h:2 * h] += 1
    return [w_ih, w_hh, b, torch.zeros_like(b)]


def _check_acts(*lists) -> None:
    for acts in lists:
        kinds = [a.WhichOneof("NonlinearityType") for a in acts]
        if kinds and kinds != ["sigmoid", "tanh", "tanh"]:
            raise NotImplementedError(f"LSTM activations {kinds}")


def _state(blobs, name, m: int, h: int) -> torch.Tensor:
    if not name:
        return torch.zeros(1, m, h)
    return blobs[name].reshape(-1, h).expand(m, h).contiguous().unsqueeze(0)


def _seq(x: torch.Tensor, i: int) -> tuple[torch.Tensor, int, int, int]:
    n, s, bb = x.shape[:3]  # (N, S, B, I, 1, 1)
    return x.reshape(n, s, bb, i).permute(1, 0, 2, 3).reshape(s, n * bb, i), n, s, bb


def _blob(y: torch.Tensor, n: int, bb: int) -> torch.Tensor:
    s, _, c = y.shape
    return y.reshape(s, n, bb, c).permute(1, 0, 2, 3).reshape(n, s, bb, c, 1, 1)


@translates("uniDirectionalLSTM")
def _uni_lstm(layer, p, ins, outs):
    h, i = int(p.outputVectorSize), int(p.inputVectorSize)
    _check_acts(p.activations)
    params = _lstm_params(layer, "weightParams.", p, h, i)
    seq_out, reverse = p.params.sequenceOutput, p.reverseInput
    ins = ins + [""] * (3 - len(ins))

    def run(blobs):
        seq, n, s, bb = _seq(blobs[ins[0]], i)
        if reverse:
            seq = seq.flip(0)  # outputs in processing order, as the executor emits them
        hx = (_state(blobs, ins[1], n * bb, h), _state(blobs, ins[2], n * bb, h))
        y, hn, cn = torch._VF.lstm(seq, hx, params, True, 1, 0.0, False, False, False)
        vals = [_blob(y if seq_out else hn, n, bb), _blob(hn, n, bb), _blob(cn, n, bb)]
        for name, v in zip(outs, vals):
            if name:
                blobs[name] = v
    return run


@translates("biDirectionalLSTM")
def _bi_lstm(layer, p, ins, outs):
    h, i = int(p.outputVectorSize), int(p.inputVectorSize)
    _check_acts(p.activationsForwardLSTM, p.activationsBackwardLSTM)
    params = _lstm_params(layer, "weightParams.0.", p, h, i) + _lstm_params(layer, "weightParams.1.", p, h, i)
    seq_out = p.params.sequenceOutput
    ins = ins + [""] * (5 - len(ins))

    def run(blobs):
        seq, n, s, bb = _seq(blobs[ins[0]], i)
        m = n * bb
        h0 = torch.cat([_state(blobs, ins[1], m, h), _state(blobs, ins[3], m, h)])
        c0 = torch.cat([_state(blobs, ins[2], m, h), _state(blobs, ins[4], m, h)])
        y, hn, cn = torch._VF.lstm(seq, (h0, c0), params, True, 1, 0.0, False, True, False)
        last = torch.cat([hn[0], hn[1]], dim=-1).unsqueeze(0)  # forward after x_S, backward after x_1
        vals = [_blob(y if seq_out else last, n, bb)] + [_blob(v[k:k + 1], n, bb) for v, k in ((hn, 0), (cn, 0), (hn, 1), (cn, 1))]
        for name, v in zip(outs, vals):
            if name:
                blobs[name] = v
    return run


@translates("copy")
def _copy(layer, p, ins, outs):
    return unary(ins, outs, lambda x: x)


def _index(idx: torch.Tensor, dim: int) -> torch.Tensor:
    i = torch.round(idx).long() if idx.is_floating_point() else idx.long()
    return torch.where(i < 0, i + dim, i)


@translates("gather")
def _gather(layer, p, ins, outs):
    axis, dst = int(p.axis), outs[0]

    def run(blobs):
        data, idx = blobs[ins[0]], blobs[ins[1]]
        a = axis % (data.dim() - 1) + 1
        if idx.shape[0] != 1:
            raise NotImplementedError("gather with per-sample indices")
        i = _index(idx[0], data.shape[a])
        y = torch.index_select(data, a, i.reshape(-1))
        blobs[dst] = y.reshape(tuple(data.shape[:a]) + tuple(i.shape) + tuple(data.shape[a + 1:]))
    return run


@translates("scatter")
def _scatter(layer, p, ins, outs):
    axis, mode, dst = int(p.axis), int(p.mode), outs[0]
    if mode not in (0, 1):
        raise NotImplementedError("scatter modes other than UPDATE and ADD")

    def run(blobs):
        data, idx, upd = blobs[ins[0]], blobs[ins[1]], blobs[ins[2]]
        if idx.shape[0] != 1:
            raise NotImplementedError("scatter with per-sample indices")
        data, upd = samples(data, upd)
        a = axis % (data.dim() - 1) + 1
        i = _index(idx[0].reshape(-1), data.shape[a])
        out = data.clone()
        (out.index_copy_ if mode == 0 else out.index_add_)(a, i, upd.contiguous())
        blobs[dst] = out
    return run


def _net(network) -> list:
    return [translate(layer) for layer in network.layers]


@translates("loop")
def _loop(layer, p, ins, outs):
    body, cond = _net(p.bodyNetwork), _net(p.conditionNetwork)
    cond_var, max_iter = p.conditionVar, int(p.maxLoopIterations)
    if not cond and not max_iter and not ins:
        raise NotImplementedError("a loop with neither a condition nor an iteration count")

    def truth(x: torch.Tensor) -> bool:
        v = x.reshape(x.shape[0], -1)[:, 0].abs() > 1e-6
        if bool(v.any()) != bool(v.all()):
            raise NotImplementedError("a loop condition that differs per sample")
        return bool(v[0])

    def run(blobs):
        limit = int(torch.round(blobs[ins[0]].reshape(-1)[0])) if ins else (max_iter if (max_iter or not cond) else None)
        it = 0
        while limit is None or it < limit:
            if cond:
                for fn in cond:
                    fn(blobs)
                if not truth(blobs[cond_var]):
                    return
            for fn in body:
                fn(blobs)
            it += 1
    return run
