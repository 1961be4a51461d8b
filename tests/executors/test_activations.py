"""Activation reuse: a run started at layer i from stored blobs equals the full run exactly, on every
fixture model; the cache keeps to its memory budget (then the disk budget, then forgets); a candidate's
first changed layer is found against the float and the fused float model."""
from __future__ import annotations

import numpy as np
import pytest

import quantizer
from harness import zoo
from harness.activations import ActivationCache, Prefix, Reference, header_digest, layer_bytes, same_bytes
from harness.executors import NumpyExecutor
from tests.fixtures import load_manifest

NAMES = [e["name"] for e in load_manifest()]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name", NAMES)
def test_a_run_from_any_layer_equals_the_full_run_exactly(name: str, golden) -> None:
    spec, inputs, _ = golden(name)
    ex = NumpyExecutor(spec)
    full = ex.predict(inputs)
    split, n = ex.io.split_feeds(inputs)
    cache = ActivationCache(memory_mb=64, spill_mb=0)
    cache.add_reference(ex)
    prefix = cache.prefix(ex)
    layers = len(ex.network)  # op boundaries (fused ops count once)
    assert prefix.first_changed == ex.network.n_layers  # the float model itself: nothing changed
    for i in sorted({0, 1, layers // 3, layers // 2, layers - 1, layers}):
        outputs, captured = ex.run_blobs(ex.input_blobs(inputs), n, capture=i, keep=prefix.needed[i])
        _same(outputs, full)
        assert set(captured) == set(prefix.needed[i])
        for a in captured.values():
            a.setflags(write=False)  # a started run only reads what it was given
        resumed, _ = ex.run_blobs(captured, n, start=i)
        _same(resumed, full)
        # through the cache: the first run stores boundary i, the second starts there
        p = Prefix(prefix.digests, prefix.layers[i], prefix.needed, prefix.layers)
        assert p.first_op == i
        _same(cache.run(ex, p, ("c", i), inputs), full)
        _same(cache.run(ex, p, ("c", i), inputs), full)
    assert cache.stats["hits"] > 0


def test_a_candidate_starts_at_its_first_changed_layer_and_matches_its_full_run() -> None:
    spec, data = zoo.load("digits_cnn")
    feeds = {k: v[:40] for k, v in data.feeds.items()}
    cache = ActivationCache(memory_mb=64, spill_mb=0)
    cache.add_reference(NumpyExecutor(spec))
    cache.add_reference(NumpyExecutor(quantizer.fuse(spec)))  # below 16 bits the model is fused first
    names = [layer.name for layer in spec.neuralNetwork.layers]
    last = quantizer.weight_tensors(spec)[-1].layer
    plan = quantizer.QuantPlan({(t.layer, t.field): quantizer.Codec("linear", 4)
                                for t in quantizer.weight_tensors(spec) if t.layer == last})
    q = quantizer.apply_plan(spec, plan)
    ex = NumpyExecutor(q)
    prefix = cache.prefix(ex)
    q_names = [layer.name for layer in q.neuralNetwork.layers]
    assert q_names[prefix.first_changed] == last and prefix.first_changed > len(names) // 2
    full = ex.predict(feeds)
    _same(cache.run(ex, prefix, 0, feeds), full)
    _same(cache.run(ex, prefix, 0, feeds), full)
    assert cache.stats == {**cache.stats, "hits": 1, "misses": 1, "stored": 1}
    assert cache.stats["skipped_layers"] == prefix.first_changed
    # a uniform plan changes the first layer: nothing to reuse
    uniform = NumpyExecutor(quantizer.apply_plan(spec, quantizer.build_plan(spec, 4, "linear")))
    assert cache.prefix(uniform).first_changed == 0
    assert header_digest(ex.io) == header_digest(NumpyExecutor(spec).io)
    # a candidate built from its model file bytes (a trial's) finds the same first changed layer
    from_bytes = NumpyExecutor(quantizer.io.serialize(q))
    assert from_bytes.model_bytes is not None and cache.prefix(from_bytes).first_changed == prefix.first_changed


def test_the_cache_keeps_to_its_memory_budget_then_spills_then_forgets(tmp_path) -> None:
    block = {"x": np.ones((256, 1024), np.float32)}  # 1 MiB
    cache = ActivationCache(memory_mb=3, spill_mb=2)
    for i in range(8):
        cache.put(("d", i), block)
        assert cache.memory_bytes <= 3 * 2**20 and cache.disk_bytes <= 2 * 2**20
    assert cache.stats["stored"] == 8 and cache.stats["spilled"] >= 2 and cache.stats["dropped"] >= 3
    assert cache.get(("d", 7), {"x"}) is not None  # newest: in memory
    spilled = cache.get(("d", 4), {"x"})  # pushed out of memory onto disk
    assert spilled is not None and not spilled["x"].flags.writeable
    np.testing.assert_array_equal(spilled["x"], block["x"])
    assert cache.get(("d", 0), {"x"}) is None  # past both budgets: forgotten
    assert cache.get(("d", 7), {"x", "y"}) is None  # an entry lacking a needed blob is no use
    folder = cache._dir
    assert folder is not None and folder.exists()
    cache.close()
    assert not folder.exists() and cache.memory_bytes == 0
    # without a disk budget nothing is written; a zero memory budget turns the cache off
    small = ActivationCache(memory_mb=1, spill_mb=0)
    small.put(("d", 0), {"x": np.ones((512, 1024), np.float32)})  # 2 MiB: larger than the budget
    assert small.stats["dropped"] == 1 and small._dir is None and small.get(("d", 0), {"x"}) is None
    assert not ActivationCache(memory_mb=0).enabled


def test_an_entry_shadowed_by_a_later_boundary_is_forgotten_not_spilled() -> None:
    """Probes in layer order: the second starts from the first's stored boundary and stores its own; pushed out
    of memory, the first's entry (only of use to a change between the two) is forgotten, the second's spilled."""
    spec, data = zoo.load("digits_cnn")
    feeds = {k: v[:40] for k, v in data.feeds.items()}
    ex = NumpyExecutor(spec)
    full = ex.predict(feeds)
    probe = ActivationCache(memory_mb=64, spill_mb=0)
    probe.add_reference(ex)
    prefix = probe.prefix(ex)
    n_ops = len(ex.network)
    early, late = n_ops // 3, 2 * n_ops // 3
    at = {b: Prefix(prefix.digests, prefix.layers[b], prefix.needed, prefix.layers) for b in (early, late)}
    assert at[early].first_op == early and at[late].first_op == late
    n = next(iter(feeds.values())).shape[0]
    size = {b: sum(v.nbytes for v in ex.run_blobs(ex.input_blobs(feeds), n, capture=b, keep=prefix.needed[b])[1].values())
            for b in (early, late)}
    cache = ActivationCache(memory_mb=1.01 * (size[early] + size[late]) / 2**20, spill_mb=64)
    cache.add_reference(ex)
    _same(cache.run(ex, at[early], "c", feeds), full)  # stores the early boundary
    _same(cache.run(ex, at[late], "c", feeds), full)   # starts there, stores the late one
    assert cache.stats == {**cache.stats, "misses": 1, "hits": 1, "stored": 2}
    _same(cache.run(ex, at[early], "other", feeds), full)  # another chunk's entry pushes both out of memory
    _same(cache.run(ex, at[late], "other", feeds), full)
    assert cache.stats["shadowed_dropped"] >= 1 and cache.stats["spilled"] >= 1
    assert cache.get(at[early].key(early, "c"), prefix.needed[early]) is None  # forgotten, never written
    assert cache.get(at[late].key(late, "c"), prefix.needed[late]) is not None  # on disk
    _same(cache.run(ex, at[late], "c", feeds), full)  # a third probe past the late boundary starts from disk
    cache.close()


def test_stored_views_are_copied_and_read_only() -> None:
    base = np.arange(100, dtype=np.float32).reshape(10, 10)
    cache = ActivationCache(memory_mb=1, spill_mb=0)
    cache.put(("k", 0), {"v": base[:, :3]})
    got = cache.get(("k", 0), {"v"})["v"]
    assert got.base is None and not got.flags.writeable and cache.memory_bytes == got.nbytes == 120
    base[:] = -1
    assert got[0, 1] == 1.0


def test_a_change_inside_a_fused_op_starts_at_the_fused_op_and_matches_its_full_run() -> None:
    """transformer_block fuses mvn+scale: a quantized scale (layer 31) is run from the mvn op (layer 30)."""
    spec = quantizer.load("tests/fixtures/transformer_block.mlmodel")
    data = np.load("tests/fixtures/transformer_block.npz")
    ref = NumpyExecutor(spec)
    assert ref.fused == {"scale": "mvn"} and len(ref.network) < ref.network.n_layers
    feeds = {k: data[k] for k in ref.io.input_names}
    cache = ActivationCache(memory_mb=64, spill_mb=0)
    cache.add_reference(ref)
    names = [layer.name for layer in spec.neuralNetwork.layers]
    plan = quantizer.QuantPlan({("input.9_scale", "scale"): quantizer.Codec("linear", 4)})
    ex = NumpyExecutor(quantizer.apply_plan(spec, plan))
    prefix = cache.prefix(ex)
    assert names[prefix.first_changed] == "input.9_scale"
    assert names[prefix.layers[prefix.first_op]] == "input.9_mvn"  # never inside the fused op
    full = ex.predict(feeds)
    _same(cache.run(ex, prefix, 0, feeds), full)
    _same(cache.run(ex, prefix, 0, feeds), full)
    assert cache.stats["hits"] == 1 and cache.stats["skipped_layers"] == names.index("input.9_mvn")
    # a later candidate changing the next layer (after the fused op) starts past it
    later = quantizer.QuantPlan({("linear_4", "weights"): quantizer.Codec("linear", 4)})
    ex2 = NumpyExecutor(quantizer.apply_plan(spec, later))
    p2 = cache.prefix(ex2)
    assert names[p2.layers[p2.first_op]] == "linear_4"
    _same(cache.run(ex2, p2, 0, feeds), ex2.predict(feeds))


@pytest.mark.parametrize("name", NAMES)
def test_layer_bytes_read_from_the_file_are_each_layers_serialization(name: str, golden) -> None:
    """The wire-format slices of the model file are byte for byte each layer's own deterministic serialization
    (a path's file, a spec's serialization); without file bytes each layer is serialized."""
    spec, _, _ = golden(name)
    ex = NumpyExecutor(spec)
    assert ex.model_bytes == quantizer.io.serialize(spec)
    sliced = layer_bytes(ex)
    assert all(isinstance(b, memoryview) for b in sliced)
    nn = ex.io.nn
    assert [bytes(b) for b in sliced] == [layer.SerializeToString(deterministic=True) for layer in nn.layers]
    ex.model_bytes = None  # e.g. built from an MLModel
    assert [bytes(b) for b in layer_bytes(ex)] == [bytes(b) for b in sliced]


def test_the_first_changed_layer_is_found_byte_for_byte() -> None:
    spec, _ = zoo.load("digits_cnn")
    ref = Reference.of(NumpyExecutor(spec))
    assert len(ref.digests) == len(ref.layers) + 1 == len(spec.neuralNetwork.layers) + 1
    assert ref.shared(ref.header, ref.layers) == len(ref.layers)
    assert ref.shared("another header", ref.layers) == -1
    changed = [bytes(b) for b in ref.layers]
    k = len(changed) // 2
    changed[k] = changed[k][:-1] + bytes([changed[k][-1] ^ 1])  # one bit of layer k
    assert ref.shared(ref.header, changed) == k
    for a, b in [(b"", b""), (b"abc", b"abc"), (bytes(range(17)), bytes(range(17)))]:
        assert same_bytes(memoryview(a), b)
    assert not same_bytes(b"abcdefgh1", b"abcdefgh2") and not same_bytes(b"12345678", b"12345670")
    assert not same_bytes(b"abc", b"abcd")
