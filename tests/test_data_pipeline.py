"""ember.data.Pipeline, transforms, text packing, sharding and caching
(DP-1, DP-2, DP-3, DP-5, DP-7, DP-13, DMLP-1, DMLP-2, DMLP-3)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
from ember.data import DistributedSampler, Pipeline, PipelineError, TensorDataset
from ember.data import transforms as T
from _data import find, missing
from ember.data.text import ByteTokenizer, CharTokenizer, LMBlockDataset, pack_blocks

SHAKESPEARE = find("tinyshakespeare.txt")
CALLS = {"n": 0}


def test_operators_dp1():
    """DP-1: range(10).filter(even).map(x10).batch(2) == [[0,20],[40,60],[80]]; drop_remainder; repeat."""
    p = Pipeline.range(10).filter(lambda x: x % 2 == 0).map(lambda x: x * 10)
    assert [b.tolist() for b in p.batch(2)] == [[0, 20], [40, 60], [80]]
    assert [b.tolist() for b in p.batch(2, drop_remainder=True)] == [[0, 20], [40, 60]]
    assert len(list(p.repeat(2))) == 10 and len(list(p.batch(2).repeat(2))) == 6
    assert list(Pipeline.range(10).skip(3).take(4)) == [3, 4, 5, 6]
    z = Pipeline.zip(Pipeline.range(3), Pipeline.from_iterable(["a", "b", "c", "d"]))
    assert list(z) == [(0, "a"), (1, "b"), (2, "c")]
    assert list(Pipeline.range(5).prefetch(2).map(lambda x: x + 1)) == [1, 2, 3, 4, 5]
    d = Pipeline.from_numpy({"x": np.arange(6).reshape(3, 2), "y": np.arange(3)}).batch(2)
    first = next(iter(d))
    assert first["x"].tolist() == [[0, 1], [2, 3]] and first["y"].tolist() == [0, 1]
    assert [x["y"] for x in d.unbatch()] == [0, 1, 2]


def test_sources_dp2(tmp_path):
    """DP-2: map-style and iterable datasets, generators, arrays and text files yield every item."""
    ds = TensorDataset(ember.arange(5), ember.arange(5) * 2)
    assert [int(b.numpy()) for a, b in Pipeline.from_dataset(ds)] == [0, 2, 4, 6, 8]

    class Cls:  # a plain Python __getitem__/__len__ class with named columns
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": np.zeros((2, 2)) + i, "label": i}
    assert [x["label"] for x in Pipeline.from_dataset(Cls())] == [0, 1, 2]
    g = Pipeline.from_generator(lambda: (i * i for i in range(4)))
    assert list(g) == list(g) == [0, 1, 4, 9]
    f = tmp_path / "t.txt"
    f.write_text("a\nbb\n\nccc\n")
    assert list(Pipeline.from_text_file(f)) == ["a", "bb", "", "ccc"]
    a = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(np.stack(list(Pipeline.from_npy(tmp_path / "a.npy", rows_per_read=4))), a)


def test_user_fn_error_names_op_and_index_dp4():
    def bad(x):
        if x == 7:
            raise ValueError("nope")
        return x
    with pytest.raises(PipelineError, match=r"map\(bad\) failed on element 7"):
        list(Pipeline.range(10).map(bad))


def test_shuffle_seeded_reshuffles_dp5():
    """DP-5: same seed -> same order; epochs differ; buffer 1 keeps order; it is a permutation."""
    a, b = Pipeline.range(100).shuffle(20, seed=5), Pipeline.range(100).shuffle(20, seed=5)
    e1, e2 = list(a), list(a)
    assert e1 == list(b) and e2 == list(b)
    assert e1 != e2 and sorted(e1) == sorted(e2) == list(range(100))
    assert list(Pipeline.range(50).shuffle(1, seed=3)) == list(range(50))
    assert list(Pipeline.range(100).shuffle(20, seed=6)) != e1


def test_shards_disjoint_cover_dp7_dmlp2():
    """DP-7/DMLP-2: 4 shards of a per-epoch shuffled stream (shared seed) are disjoint, cover the set
    in every epoch, and differ in size by <= 1."""
    shards = [Pipeline.range(103).shuffle(16, seed=9).shard(4, i) for i in range(4)]
    for _ in range(3):
        parts = [list(s) for s in shards]
        flat = sum(parts, [])
        assert sorted(flat) == list(range(103))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_distributed_sampler_dp7():
    """DP-7: DistributedSampler parts are disjoint and cover the set every epoch (set_epoch reshuffles)."""
    ds = list(range(100))
    samplers = [DistributedSampler(ds, num_replicas=4, rank=r, shuffle=True, seed=3) for r in range(4)]
    orders = []
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        parts = [list(s) for s in samplers]
        assert sorted(sum(parts, [])) == ds and all(len(p) == 25 == len(s) for p, s in zip(parts, samplers))
        orders.append(parts[0])
    assert orders[0] != orders[1]
    odd = list(range(10))
    parts = [list(DistributedSampler(odd, 4, r, shuffle=False)) for r in range(4)]
    assert set(sum(parts, [])) == set(odd) and all(len(p) == 3 for p in parts)  # padded
    parts = [list(DistributedSampler(odd, 4, r, shuffle=True, drop_last=True)) for r in range(4)]
    flat = sum(parts, [])
    assert len(flat) == len(set(flat)) == 8
    # works as a DataLoader sampler
    from ember.data import DataLoader
    got = [b[0].numpy().tolist() for b in DataLoader(TensorDataset(ember.arange(8)), batch_size=2,
                                                      sampler=DistributedSampler(range(8), 2, 1, shuffle=False))]
    assert got == [[1, 3], [5, 7]]


def _costly(x):
    CALLS["n"] += 1
    return np.asarray(x, np.float32) * 2


def _costly3(x):
    CALLS["n"] += 1
    return np.asarray(x, np.float32) * 3


def test_cache_memory_and_file_dmlp3(tmp_path):
    """DMLP-3: after map().cache(), epoch 2 calls the map function 0 times and yields identical data;
    a file cache survives a restart (new pipeline object) and a changed upstream invalidates it."""
    CALLS["n"] = 0
    p = Pipeline.range(50).map(_costly).cache()
    e1 = list(p)
    assert CALLS["n"] == 50
    e2 = list(p)
    assert CALLS["n"] == 50
    assert all(np.array_equal(a, b) for a, b in zip(e1, e2))

    def build(fn, n=40):
        return Pipeline.from_numpy((np.arange(n), np.arange(n) % 3)).map(lambda t: {"x": fn(t[0]), "y": int(t[1])}) \
            .cache(tmp_path / "c").batch(8)
    CALLS["n"] = 0
    e1 = list(build(_costly))
    assert CALLS["n"] == 40
    e2 = list(build(_costly))  # "restart": a fresh pipeline reads the files
    assert CALLS["n"] == 40
    for a, b in zip(e1, e2):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["y"], b["y"])
    list(build(_costly3))  # a different map function: new fingerprint, recomputed
    assert CALLS["n"] == 80
    list(build(_costly, n=41))  # different source data: recomputed
    assert CALLS["n"] == 121
    dirs = [d for d in os.listdir(tmp_path / "c")]
    assert len(dirs) == 1  # stale fingerprints removed
    meta = json.loads((tmp_path / "c" / dirs[0] / "meta.json").read_text())
    assert meta["count"] == 41
    for f in os.listdir(tmp_path / "c" / dirs[0]):  # every array file loads without pickle
        if f.endswith(".npy"):
            np.load(tmp_path / "c" / dirs[0] / f, allow_pickle=False)
    # a partial epoch does not populate the cache
    CALLS["n"] = 0
    q = Pipeline.range(10).map(_costly).cache()
    list(q.take(3))
    list(q)
    assert CALLS["n"] == 13


_STREAM = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from ember.data import Pipeline
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    path, cap = sys.argv[1], int(sys.argv[2])
    p = Pipeline.from_npy(path, rows_per_read=64).map(lambda r: r * 2.0).batch(32)
    list(Pipeline.from_npy(path).take(1))
    base = rss()
    total = 0
    for epoch in range(10):
        for b in p:
            total += b.shape[0]
    print(total, hwm() - base)
""")


def test_streaming_under_memory_cap_dmlp1(tmp_path):
    """DMLP-1: iterating a 64 MB file-backed dataset ten times (640 MB streamed) keeps peak RSS
    growth under an 8 MB cap (measured from /proc/self/status VmHWM in a subprocess)."""
    rows, width = 4096, 4096  # float32: 64 MB
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    for i in range(0, rows, 512):
        arr[i:i + 512] = i
    arr.flush()
    del arr
    cap = 8 * 2 ** 20
    r = subprocess.run([sys.executable, "-c", _STREAM, str(path), str(cap)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    total, growth = map(int, r.stdout.split())
    assert total == 10 * rows
    assert growth < cap, f"peak RSS grew by {growth / 2**20:.1f} MB (cap {cap / 2**20:.0f} MB)"


def test_stats_table_dp13():
    """DP-13: per-stage items and rates identify the slow stage."""
    import time

    def slow(x):
        time.sleep(0.002)
        return x
    p = Pipeline.range(30).map(slow, name="slow").map(lambda x: x + 1, name="fast").batch(10)
    assert len(list(p)) == 3
    st = p.stats()
    names = [r.name for r in st]
    assert names == ["range(0,30,1)", "map(slow)", "map(fast)", "batch(10)"]
    assert st.bottleneck().name == "map(slow)"
    assert st[1].items == 30 and st[1].busy >= 0.05 and st[2].wait >= 0.05
    assert "items/s" in str(st)


# ---------------------------------------------------------------- transforms (DP-3)
def test_vision_transforms_match_numpy():
    """DP-3: ToTensor, Normalize, HWC<->CHW, OneHot, Compose against hand-written numpy."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    chw = T.ToTensor()(img)
    np.testing.assert_allclose(chw, img.transpose(2, 0, 1).astype(np.float32) / 255, rtol=1e-6)
    assert chw.dtype == np.float32 and chw.shape == (3, 5, 6)
    n = T.Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    want = (chw - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([0.5, 0.25, 2.0])[:, None, None]
    np.testing.assert_allclose(n(chw), want, rtol=1e-5)
    batch = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    comp = T.Compose([T.ToTensor(), n])
    np.testing.assert_allclose(comp.batch(batch), np.stack([comp(x) for x in batch]), rtol=1e-6)
    np.testing.assert_array_equal(T.CHW2HWC()(T.HWC2CHW()(img)), img)
    np.testing.assert_array_equal(T.HWC2CHW().batch(batch), batch.transpose(0, 3, 1, 2))
    assert T.OneHot(10)(3)[3] == 1 and T.OneHot(10)(3).sum() == 1
    np.testing.assert_array_equal(T.OneHot(4)(np.array([0, 3])), np.eye(4, dtype=np.float32)[[0, 3]])
    mnist = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    assert T.ToTensor()(mnist).shape == (1, 28, 28)


def test_random_transforms_seeded_and_match_numpy():
    """DP-3: RandomCrop(padding) and RandomHorizontalFlip draw from ember generators and equal a
    hand-written numpy version using the same draws; batch mode equals its own per-sample rule."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8)).astype(np.float32)
    g = ember.Generator().manual_seed(7)
    out = T.RandomCrop(8, padding=2, generator=g)(x)
    u = ember.rand(2, generator=ember.Generator().manual_seed(7), dtype=ember.float64).numpy()
    top, left = int(u[0] * 5), int(u[1] * 5)
    xp = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    np.testing.assert_array_equal(out, xp[:, top:top + 8, left:left + 8])
    xb = rng.standard_normal((6, 2, 8, 8)).astype(np.float32)
    ob = T.RandomCrop(6, padding=1, generator=ember.Generator().manual_seed(3)).batch(xb)
    u = ember.rand(12, generator=ember.Generator().manual_seed(3), dtype=ember.float64).numpy()
    xpb = np.pad(xb, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for k in range(6):
        t, l = int(u[k] * 5), int(u[6 + k] * 5)
        np.testing.assert_array_equal(ob[k], xpb[k, :, t:t + 6, l:l + 6])
    fb = T.RandomHorizontalFlip(0.5, generator=ember.Generator().manual_seed(11)).batch(xb)
    u = ember.rand(6, generator=ember.Generator().manual_seed(11), dtype=ember.float64).numpy()
    for k in range(6):
        np.testing.assert_array_equal(fb[k], xb[k, ..., ::-1] if u[k] < 0.5 else xb[k])
    ember.manual_seed(0)
    a = T.RandomHorizontalFlip()(x)
    ember.manual_seed(0)
    np.testing.assert_array_equal(a, T.RandomHorizontalFlip()(x))


# ---------------------------------------------------------------- text (DP-3)
def test_tokenizers_and_packing_tinyshakespeare():
    """DP-3 (text): byte/char tokenizers round-trip tinyshakespeare; packing gives next-token targets."""
    if SHAKESPEARE is None:
        pytest.skip(missing("tinyshakespeare.txt"))
    text = open(SHAKESPEARE, encoding="utf-8").read()
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.vocab_size == len(set(text)) and tok.decode(ids[:500]) == text[:500]
    assert CharTokenizer.from_json(tok.to_json()).chars == tok.chars
    b = ByteTokenizer()
    assert b.decode(b.encode(text[:1000])) == text[:1000]
    x, y = pack_blocks(ids, 64)
    n = (len(ids) - 65) // 64 + 1
    assert x.shape == y.shape == (n, 64)
    np.testing.assert_array_equal(x[3], ids[192:256])
    np.testing.assert_array_equal(y[3], ids[193:257])
    ds = LMBlockDataset(ids, 64)
    assert len(ds) == n
    np.testing.assert_array_equal(ds[3][0], x[3])
    np.testing.assert_array_equal(ds[-1][1], y[-1])
    xs, ys = pack_blocks(np.arange(10), 4, stride=2)
    assert xs.tolist() == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]] and ys[0].tolist() == [1, 2, 3, 4]
