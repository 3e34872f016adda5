"""Counter-based random numbers: Philox4x32-10 known answers, generator state, distributions."""
from __future__ import annotations

import math

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.ops.philox import philox4x32_10

N = 100_000


def _u32(*words):
    return np.array(words, dtype=np.uint32)


# ---------------------------------------------------------------- Philox known answers (Random123 kat_vectors)
@pytest.mark.parametrize("ctr, key, expect", [
    (_u32(0, 0, 0, 0), _u32(0, 0), _u32(0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (_u32(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), _u32(0xFFFFFFFF, 0xFFFFFFFF),
     _u32(0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (_u32(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), _u32(0xA4093822, 0x299F31D0),
     _u32(0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(ctr, key, expect):
    got = philox4x32_10(ctr, key)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, expect)


def test_philox_is_vectorised_over_counters_and_keys():
    ctrs = np.stack([_u32(0, 0, 0, 0), _u32(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
                     _u32(0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)])
    keys = np.stack([_u32(0, 0), _u32(0xFFFFFFFF, 0xFFFFFFFF), _u32(0xA4093822, 0x299F31D0)])
    got = philox4x32_10(ctrs, keys)
    assert got.shape == (3, 4)
    np.testing.assert_array_equal(got[2], _u32(0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))
    shared = philox4x32_10(ctrs, _u32(0, 0))
    np.testing.assert_array_equal(shared[0], _u32(0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8))


def test_random_bits_are_philox_of_seed_and_offset():
    """Element i of a draw is word i % 4 of Philox(counter = offset + i // 4, key = seed)."""
    g = ember.Generator().manual_seed(0x0000000500000007)
    bits = g.bits((10,)).numpy()
    ctr = np.zeros((3, 4), np.uint32)
    ctr[:, 0] = [0, 1, 2]
    expect = philox4x32_10(ctr, _u32(7, 5)).reshape(-1)[:10]
    np.testing.assert_array_equal(bits, expect)


# ---------------------------------------------------------------- state and reproducibility
def test_manual_seed_reproduces():
    ember.manual_seed(1234)
    a = [ember.rand(7), ember.randn(3, 2), ember.randint(0, 100, (5,)), ember.randperm(9)]
    ember.manual_seed(1234)
    b = [ember.rand(7), ember.randn(3, 2), ember.randint(0, 100, (5,)), ember.randperm(9)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert ember.initial_seed() == 1234
    ember.manual_seed(1235)
    assert not np.array_equal(ember.rand(7).numpy(), a[0].numpy())


def test_generators_are_independent():
    g1 = ember.Generator().manual_seed(5)
    g2 = ember.Generator().manual_seed(5)
    ember.manual_seed(5)
    a = ember.rand(4, generator=g1)
    ember.rand(100)  # the default generator moving on does not touch g1 / g2
    ember.rand(50, generator=g2)  # g2 moving does not touch g1
    g2.manual_seed(5)
    b = ember.rand(4, generator=g2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(ember.rand(4, generator=g1).numpy(), ember.rand(4, generator=g2).numpy())
    g3 = ember.Generator().manual_seed(6)
    assert not np.array_equal(ember.rand(4, generator=g3).numpy(), a.numpy())


def test_draws_advance_the_counter_by_blocks():
    g = ember.Generator().manual_seed(42)
    s0 = g.get_state().numpy().copy()
    assert s0.dtype == np.uint32 and s0.shape == (4,)
    assert s0.tolist() == [42, 0, 0, 0]
    a = ember.rand(5, generator=g)
    b = ember.rand(5, generator=g)
    assert not np.array_equal(a.numpy(), b.numpy())
    offset = 0
    for n in (5, 5):
        offset += math.ceil(n / 4)
    assert g.get_state().tolist() == [42, 0, offset, 0]
    for n in (1, 4, 8, 9, 0):
        before = g.get_state().tolist()[2]
        g.bits((n,))
        assert g.get_state().tolist()[2] == before + math.ceil(n / 4), n
    before = g.get_state().tolist()[2]
    ember.rand(3, dtype=ember.float64, generator=g)  # two words per float64 value
    assert g.get_state().tolist()[2] == before + math.ceil(6 / 4)
    # the state tensor keeps its memory (updated in place, version bumped)
    ptr, ver = g.state.data_ptr(), g.state._version
    ember.rand(2, generator=g)
    assert g.state.data_ptr() == ptr and g.state._version > ver


def test_counter_carries_into_high_word():
    g = ember.Generator().manual_seed(9)
    start = ember.tensor(np.array([9, 0, 0xFFFFFFFE, 3], np.uint32))
    g.set_state(start)
    bits = g.bits((16,)).numpy()  # 4 blocks: counters 2**32-2, 2**32-1, then 0 and 1 with hi+1
    assert g.get_state().tolist() == [9, 0, 2, 4]
    ctr = np.zeros((4, 4), np.uint32)
    ctr[:, 0] = [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    ctr[:, 1] = [3, 3, 4, 4]
    np.testing.assert_array_equal(bits, philox4x32_10(ctr, _u32(9, 0)).reshape(-1))
    # an offset step bigger than the low word also carries
    g.set_state(ember.tensor(np.array([9, 0, 0xFFFFFFFF, 0], np.uint32)))
    g.bits((4,))
    assert g.get_state().tolist() == [9, 0, 0, 1]


def test_rng_state_round_trip_replays():
    ember.manual_seed(77)
    ember.rand(3)
    state = ember.get_rng_state()
    a = (ember.rand(10), ember.randn(4), ember.randint(0, 5, (6,)))
    after = ember.get_rng_state()
    ember.set_rng_state(state)
    b = (ember.rand(10), ember.randn(4), ember.randint(0, 5, (6,)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    np.testing.assert_array_equal(ember.get_rng_state().numpy(), after.numpy())
    # the returned state is a copy: drawing does not change it
    s = ember.get_rng_state()
    ember.rand(8)
    np.testing.assert_array_equal(s.numpy(), after.numpy())
    g = ember.Generator().manual_seed(3)
    gs = g.get_state()
    x = ember.rand(5, generator=g)
    g.set_state(gs)
    np.testing.assert_array_equal(ember.rand(5, generator=g).numpy(), x.numpy())


# ---------------------------------------------------------------- distributions
@pytest.mark.parametrize("dtype, bits", [(ember.float16, 11), (ember.bfloat16, 8), (ember.float32, 24),
                                         (ember.float64, 53)])
def test_rand_in_unit_interval_for_every_float_dtype(dtype, bits):
    g = ember.Generator().manual_seed(11)
    r = ember.rand(N, dtype=dtype, generator=g)
    assert r.dtype is dtype and r.shape == (N,)
    v = r.numpy().astype(np.float64)
    assert v.min() >= 0.0 and v.max() < 1.0
    # values are multiples of 2**-bits: exact in the dtype, so rounding can never give 1.0
    np.testing.assert_array_equal(v * 2.0 ** bits, np.floor(v * 2.0 ** bits))
    assert abs(v.mean() - 0.5) < 5 * math.sqrt(1 / 12 / N)
    assert abs(v.var() - 1 / 12) < 0.003
    # the largest value a 2**-bits grid allows is reachable in principle and is below 1
    assert (2 ** bits - 1) / 2 ** bits < 1.0 and np.asarray((2 ** bits - 1) / 2 ** bits, dtype.np) < 1


def test_rand_never_returns_one_from_all_ones_bits(monkeypatch):
    """Even when the Philox output is all ones, uniform samples stay below 1 in every dtype."""
    from ember.api import random as R

    def ones_bits(self, shape):
        return ember.tensor(np.full(tuple(shape), 0xFFFFFFFF, np.uint32))

    monkeypatch.setattr(R.Generator, "bits", ones_bits)
    for dtype in (ember.float16, ember.bfloat16, ember.float32, ember.float64):
        v = ember.rand(8, dtype=dtype).numpy().astype(np.float64)
        assert v.max() < 1.0, dtype
        assert v.max() > 0.99, dtype


def test_rand_shapes_and_requires_grad():
    assert ember.rand(2, 3).shape == (2, 3) and ember.rand((2, 3)).shape == (2, 3)
    assert ember.rand(2).dtype is ember.float32
    assert ember.rand(()).shape == ()
    assert ember.rand(0, 3).shape == (0, 3)
    assert ember.rand(3, requires_grad=True).requires_grad
    with pytest.raises(TypeError):
        ember.rand(3, dtype=ember.int64)
    assert ember.randn(2, 3).shape == (2, 3) and ember.randn((4,), dtype=ember.float64).dtype is ember.float64


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_randn_statistics(dtype):
    g = ember.Generator().manual_seed(12)
    z = ember.randn(N, dtype=dtype, generator=g).numpy().astype(np.float64)
    assert np.isfinite(z).all()
    se = 1 / math.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / N)
    assert abs(np.mean(z ** 3)) < 5 * math.sqrt(15 / N)  # symmetric
    assert abs(np.mean(z ** 4) - 3) < 5 * math.sqrt(96 / N)  # Gaussian tails
    assert abs(np.mean(np.abs(z) < 1) - 0.682689) < 0.01


def test_normal_mean_std_and_tensor_args():
    g = ember.Generator().manual_seed(13)
    x = ember.normal(2.0, 3.0, (N,), generator=g).numpy().astype(np.float64)
    assert abs(x.mean() - 2.0) < 5 * 3 / math.sqrt(N)
    assert abs(x.std() - 3.0) < 0.05
    m = ember.tensor([0.0, 10.0, -5.0])
    s = ember.tensor([1.0, 0.5, 2.0])
    y = ember.normal(m, s)
    assert y.shape == (3,) and y.dtype is ember.float32
    big = ember.normal(ember.full((N,), -1.0), ember.full((N,), 0.5), generator=g).numpy()
    assert abs(big.mean() + 1) < 0.01 and abs(big.std() - 0.5) < 0.01


def test_randint_uniformity_dtype_and_range():
    g = ember.Generator().manual_seed(14)
    k = 10
    r = ember.randint(0, k, (N,), generator=g)
    assert r.dtype is ember.int64 and r.shape == (N,)
    v = r.numpy()
    assert v.min() >= 0 and v.max() < k
    counts = np.bincount(v, minlength=k)
    chi2 = float(((counts - N / k) ** 2 / (N / k)).sum())
    assert chi2 < 35.0  # 9 degrees of freedom: p < 1e-4
    r2 = ember.randint(-3, 4, (2, 50), generator=g, dtype=ember.int32)
    assert r2.dtype is ember.int32 and r2.shape == (2, 50)
    assert r2.numpy().min() >= -3 and r2.numpy().max() <= 3
    assert set(np.unique(r2.numpy())) == set(range(-3, 4))
    r3 = ember.randint(5, (7,), generator=g)  # randint(high, size)
    assert r3.shape == (7,) and r3.numpy().max() < 5 and r3.numpy().min() >= 0
    with pytest.raises(ValueError):
        ember.randint(3, 3, (2,))


def test_bernoulli_statistics():
    g = ember.Generator().manual_seed(15)
    p = ember.full((N,), 0.3)
    b = ember.bernoulli(p, generator=g)
    assert b.dtype is ember.float32 and set(np.unique(b.numpy())) <= {0.0, 1.0}
    assert abs(b.numpy().mean() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / N)
    probs = ember.tensor([0.0, 1.0] * 500, dtype=ember.float64)
    bb = ember.bernoulli(probs, generator=g)
    assert bb.dtype is ember.float64
    np.testing.assert_array_equal(bb.numpy(), probs.numpy())  # p=0 never, p=1 always
    fixed = ember.bernoulli(ember.zeros(N), 0.8, generator=g)
    assert abs(fixed.numpy().mean() - 0.8) < 5 * math.sqrt(0.16 / N)


def test_randperm_is_a_permutation():
    g = ember.Generator().manual_seed(16)
    p = ember.randperm(1000, generator=g)
    assert p.dtype is ember.int64
    np.testing.assert_array_equal(np.sort(p.numpy()), np.arange(1000))
    assert not np.array_equal(p.numpy(), np.arange(1000))
    assert ember.randperm(0).shape == (0,)
    assert ember.randperm(5, dtype=ember.int32).dtype is ember.int32
    # first-position frequencies are roughly uniform
    firsts = np.array([ember.randperm(4, generator=g).numpy()[0] for _ in range(400)])
    counts = np.bincount(firsts, minlength=4)
    assert counts.min() > 60


def test_inplace_fills():
    g = ember.Generator().manual_seed(17)
    t = ember.zeros(N)
    ptr = t.data_ptr()
    t.uniform_(-2.0, 3.0, generator=g)
    v = t.numpy()
    assert t.data_ptr() == ptr and v.min() >= -2.0 and v.max() < 3.0 and abs(v.mean() - 0.5) < 0.03
    t.normal_(1.0, 2.0, generator=g)
    assert abs(t.numpy().mean() - 1.0) < 0.03 and abs(t.numpy().std() - 2.0) < 0.03
    w = ember.zeros(10, requires_grad=True)
    w.normal_()  # an init helper runs without recording and keeps the leaf a leaf
    assert w.is_leaf and w.requires_grad and w.numpy(force=True).std() > 0


def test_dropout_differs_between_calls_but_reseeding_reproduces():
    x = ember.ones(1000)
    ember.manual_seed(21)
    a = F.dropout(x, 0.5)
    b = F.dropout(x, 0.5)
    assert not np.array_equal(a.numpy(), b.numpy())
    assert set(np.unique(a.numpy())) <= {0.0, 2.0}
    assert 400 < int((a.numpy() == 0).sum()) < 600
    ember.manual_seed(21)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), a.numpy())
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), b.numpy())
    assert F.dropout(x, 0.5, training=False) is x
    assert not F.dropout(x, 1.0).numpy().any()
    g = ember.Generator().manual_seed(21)
    np.testing.assert_array_equal(F.dropout(x, 0.5, generator=g).numpy(), a.numpy())
    with pytest.raises(ValueError):
        F.dropout(x, 1.5)
