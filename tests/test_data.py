"""ember.data: datasets, samplers, default_collate and the single-process DataLoader."""
import collections

import numpy as np
import pytest

import ember
from ember.data import (BatchSampler, ConcatDataset, DataLoader, Dataset, IterableDataset, RandomSampler,
                        SequentialSampler, Subset, SubsetRandomSampler, TensorDataset, default_collate,
                        random_split)


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {"x": np.full((2,), i, np.float32), "y": i * i, "name": f"s{i}"}


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


def _order(loader):
    return np.concatenate([b[-1].numpy() for b in loader]).tolist()


# ---------------------------------------------------------------- datasets
def test_tensor_dataset_subset_concat():
    x, y = ember.randn(10, 3), ember.arange(10)
    ds = TensorDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[4]
    assert xi.shape == (3,) and yi.item() == 4 and np.array_equal(xi.numpy(), x.numpy()[4])
    ds_np = TensorDataset(np.zeros((4, 2), np.float32), np.arange(4))
    assert ds_np[3][1].item() == 3 and ds_np.tensors[0].dtype is ember.float32
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(ember.zeros(3), ember.zeros(4))
    sub = Subset(ds, [7, 2])
    assert len(sub) == 2 and sub[0][1].item() == 7
    cat = ds + Squares(3)
    assert isinstance(cat, ConcatDataset) and len(cat) == 13
    assert cat[11]["y"] == 1 and cat[-1]["y"] == 4
    with pytest.raises(IndexError):
        cat[13]


def test_random_split_reproducible_and_disjoint():
    ds = Squares(10)
    ember.manual_seed(3)
    a, b = random_split(ds, [7, 3])
    ember.manual_seed(3)
    a2, b2 = random_split(ds, [7, 3])
    assert list(a.indices) == list(a2.indices) and list(b.indices) == list(b2.indices)
    assert sorted(list(a.indices) + list(b.indices)) == list(range(10))
    g = ember.Generator().manual_seed(5)
    parts = random_split(ds, [0.5, 0.3, 0.2], generator=g)
    assert [len(p) for p in parts] == [5, 3, 2]
    assert [len(p) for p in random_split(Squares(11), [0.5, 0.5])] == [6, 5]
    with pytest.raises(ValueError):
        random_split(ds, [3, 3])


# ---------------------------------------------------------------- samplers
def test_samplers():
    ds = Squares(7)
    assert list(SequentialSampler(ds)) == list(range(7))
    ember.manual_seed(0)
    perm = list(RandomSampler(ds))
    assert sorted(perm) == list(range(7))
    ember.manual_seed(0)
    assert list(RandomSampler(ds)) == perm  # ember.manual_seed makes it reproducible
    with_rep = list(RandomSampler(ds, replacement=True, num_samples=20))
    assert len(with_rep) == 20 and all(0 <= i < 7 for i in with_rep)
    more = list(RandomSampler(ds, num_samples=10))
    assert len(more) == 10 and sorted(more[:7]) == list(range(7))
    assert sorted(SubsetRandomSampler([1, 3, 5])) == [1, 3, 5]
    assert list(BatchSampler(SequentialSampler(ds), 3, False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(ds, 3, False)) == 3 and len(BatchSampler(ds, 3, True)) == 2
    with pytest.raises(ValueError):
        BatchSampler(ds, 0, False)


# ---------------------------------------------------------------- collate
def test_default_collate_rules():
    Point = collections.namedtuple("Point", "a b")
    batch = [{"img": np.ones((2, 2), np.uint8) * i, "label": i, "w": 0.5 * i, "ok": True, "t": ember.tensor([i, i]),
              "name": f"n{i}", "pair": (i, ember.tensor(float(i))), "pt": Point(i, 2 * i)} for i in range(3)]
    out = default_collate(batch)
    assert out["img"].shape == (3, 2, 2) and out["img"].dtype is ember.uint8
    assert out["label"].dtype is ember.int64 and out["label"].tolist() == [0, 1, 2]
    assert out["w"].dtype is ember.float64  # Python floats collate to float64, as in PyTorch
    assert out["ok"].dtype is ember.bool
    assert out["t"].shape == (3, 2) and out["t"].dtype is ember.int64
    assert out["name"] == ["n0", "n1", "n2"]
    assert isinstance(out["pair"], list) and out["pair"][0].tolist() == [0, 1, 2]
    assert isinstance(out["pt"], Point) and out["pt"].b.tolist() == [0, 2, 4]
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError):
        default_collate([object(), object()])


def test_collate_keeps_autograd():
    a = ember.randn(2, requires_grad=True)
    out = default_collate([a, a * 2])
    out.sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]


# ---------------------------------------------------------------- DataLoader
def test_loader_map_style_general_path():
    loader = DataLoader(Squares(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert batches[0]["y"].tolist() == [0, 1, 4, 9] and batches[-1]["x"].shape == (2, 2)
    assert len(DataLoader(Squares(10), batch_size=4, drop_last=True)) == 2
    assert [len(b["y"]) for b in DataLoader(Squares(10), batch_size=4, drop_last=True)] == [4, 4]
    single = list(DataLoader(Squares(3), batch_size=None))
    assert single[1]["y"] == 1 and isinstance(single[1]["x"], ember.Tensor)
    custom = list(DataLoader(Squares(5), batch_size=2, collate_fn=lambda b: [d["y"] for d in b]))
    assert custom == [[0, 1], [4, 9], [16]]


def test_loader_shuffle_seeded_and_changes_per_epoch():
    ds = TensorDataset(ember.arange(100))
    ember.manual_seed(7)
    loader = DataLoader(ds, batch_size=16, shuffle=True)
    e1, e2 = _order(loader), _order(loader)
    assert sorted(e1) == list(range(100)) and sorted(e2) == list(range(100))
    assert e1 != e2 and e1 != list(range(100))  # shuffled, and differently each epoch
    ember.manual_seed(7)
    assert _order(loader) == e1  # reproducible from the seed
    g1, g2 = ember.Generator().manual_seed(1), ember.Generator().manual_seed(1)
    assert _order(DataLoader(ds, batch_size=16, shuffle=True, generator=g1)) == \
        _order(DataLoader(ds, batch_size=16, shuffle=True, generator=g2))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_fast_path_equals_general_path(shuffle, drop_last):
    x = ember.randn(103, 3, 4)
    y = ember.randint(0, 10, (103,))
    ds = TensorDataset(x, y)
    ember.manual_seed(11)
    fast = list(DataLoader(ds, batch_size=10, shuffle=shuffle, drop_last=drop_last))
    ember.manual_seed(11)
    slow = list(DataLoader(ds, batch_size=10, shuffle=shuffle, drop_last=drop_last, collate_fn=default_collate))
    assert len(fast) == len(slow) == (10 if drop_last else 11)
    for a, b in zip(fast, slow):
        assert isinstance(a, list) and isinstance(b, list)
        for u, v in zip(a, b):
            assert u.dtype is v.dtype and u.shape == v.shape and np.array_equal(u.numpy(), v.numpy())


def test_fast_path_runs_no_per_sample_python(monkeypatch):
    ds = TensorDataset(ember.randn(50, 2), ember.arange(50))
    monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, i: pytest.fail("per-sample access"))
    batches = list(DataLoader(ds, batch_size=8, shuffle=True))
    assert sum(b[0].shape[0] for b in batches) == 50
    # random_split subsets of a TensorDataset take the fast path too
    train, val = random_split(ds, [40, 10])
    got = np.concatenate([b[1].numpy() for b in DataLoader(val, batch_size=4)])
    assert got.tolist() == ds.tensors[1].numpy()[np.asarray(val.indices)].tolist()
    # batches are copies: writing into one does not change the dataset
    b = next(iter(DataLoader(ds, batch_size=5)))
    b[0].mul_(0.0)
    assert ds.tensors[0].numpy()[:5].any()


def test_loader_with_samplers():
    ds = TensorDataset(ember.arange(10))
    out = _order(DataLoader(ds, batch_size=3, sampler=SubsetRandomSampler([2, 4, 6, 8])))
    assert sorted(out) == [2, 4, 6, 8]
    bs = [[9, 0], [5]]
    assert _order(DataLoader(ds, batch_sampler=bs)) == [9, 0, 5]

    class Reverse(SequentialSampler):
        def __iter__(self):
            return iter(range(len(self.data_source) - 1, -1, -1))

    assert _order(DataLoader(ds, batch_size=4, sampler=Reverse(ds))) == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, batch_size=2, shuffle=True, sampler=SequentialSampler(ds))
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, batch_sampler=bs, batch_size=4)


def test_loader_iterable_dataset():
    loader = DataLoader(Stream(10), batch_size=4)
    got = [b.tolist() for b in loader]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for b in DataLoader(Stream(10), batch_size=4, drop_last=True)] == got[:2]
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(Stream(3), shuffle=True)
    with pytest.raises(TypeError):
        len(loader)


def test_num_workers_rejected_clearly():
    # num_workers > 0 now runs worker processes (tests/test_data_workers.py); bad values still raise
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(Squares(3), num_workers=-1)
    with pytest.raises(ValueError, match="num_workers > 0"):
        DataLoader(Squares(3), prefetch_factor=2)


def test_flagship_shape_pipeline():
    """The CNN's input pipeline: float32 images and int64 labels, shuffled batches, last one short."""
    x = np.random.default_rng(0).random((130, 1, 28, 28), dtype=np.float32)
    y = np.arange(130) % 10
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    shapes = [(xb.shape, yb.shape, xb.dtype, yb.dtype) for xb, yb in loader]
    assert shapes[0] == ((64, 1, 28, 28), (64,), ember.float32, ember.int64)
    assert shapes[-1][0] == (2, 1, 28, 28) and len(shapes) == 3
