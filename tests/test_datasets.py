"""ember.datasets: Fashion-MNIST/MNIST IDX reading, search order, checksummed downloads."""
import contextlib
import functools
import gzip
import hashlib
import http.server
import pathlib
import shutil
import threading

import numpy as np
import pytest

import ember
from ember.data import DataLoader, TensorDataset
from ember.datasets import MNIST, DatasetError, FashionMNIST, read_idx
from ember.datasets import mnist as mnist_mod
from _data import find, missing

FMNIST = find("fashion-mnist", "t10k-images-idx3-ubyte.gz")
needs_data = pytest.mark.skipif(FMNIST is None, reason=missing("fashion-mnist"))
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $EMBER_DATA, a fresh home (so ~/.cache is empty) and no system directory."""
    monkeypatch.delenv("EMBER_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist_mod, "SYSTEM_DIR", str(tmp_path / "nonexistent"))
    return tmp_path


def _idx(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
            np.float64: 0x0E}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_split(d: pathlib.Path, n=5, train=False, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    lbls = rng.integers(0, 10, n).astype(np.uint8)
    pre = "train" if train else "t10k"
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in ((f"{pre}-images-idx3-ubyte", imgs), (f"{pre}-labels-idx1-ubyte", lbls)):
        data = _idx(arr)
        if gz:
            (d / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    return imgs, lbls


# ---------------------------------------------------------------- the real files
@needs_data
def test_fashion_mnist_test_split():
    ds = FashionMNIST(root=FMNIST, train=False)
    assert len(ds) == 10_000 and ds.data.shape == (10_000, 28, 28) and ds.data.dtype == np.uint8
    assert ds.targets.dtype == np.int64 and np.bincount(ds.targets).tolist() == [1000] * 10
    img, label = ds[0]
    assert img.shape == (28, 28) and isinstance(label, int) and label == 9  # an ankle boot
    ds_t = FashionMNIST(root=FMNIST, train=False, transform=lambda a: a.astype(np.float32) / 255,
                        target_transform=lambda t: t + 100)
    img, label = ds_t[0]
    assert img.dtype == np.float32 and img.max() <= 1.0 and label == 109
    x, y = ds.as_tensors()
    assert x.shape == (10_000, 1, 28, 28) and x.dtype is ember.float32 and y.dtype is ember.int64
    assert float(x.numpy().min()) == 0.0 and float(x.numpy().max()) == 1.0
    assert np.array_equal(x.numpy()[:, 0] * 255, ds.data.astype(np.float32))
    xs, _ = ds.as_tensors(standardize=True)
    assert np.allclose(xs.numpy(), (x.numpy() - 0.2860) / 0.3530, atol=1e-6)
    xu, _ = ds.as_tensors(normalize=False)
    assert xu.dtype is ember.uint8
    batch = next(iter(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)))
    assert batch[0].shape == (32, 1, 28, 28) and batch[1].shape == (32,)


@needs_data
def test_fashion_mnist_train_split_statistics():
    ds = FashionMNIST(root=FMNIST, train=True)
    assert len(ds) == 60_000 and np.bincount(ds.targets).tolist() == [6000] * 10
    hist = np.bincount(ds.data.reshape(-1), minlength=256).astype(np.float64)
    v = np.arange(256) / 255
    mean = hist @ v / hist.sum()
    std = np.sqrt(hist @ (v - mean) ** 2 / hist.sum())
    assert abs(mean - FashionMNIST.mean) < 5e-4 and abs(std - FashionMNIST.std) < 5e-4


@needs_data
def test_content_hashes_of_local_copy():
    """The hard-coded SHA-256s of the uncompressed files match the local (Debian) copy; the gzip
    wrappers differ from Zalando's originals, whose MD5s are the official ones."""
    for f in FILES:
        raw = gzip.decompress((FMNIST / f).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == FashionMNIST.content_sha256[f[:-3]]
        assert len(FashionMNIST.resources[f]) == 32


# ---------------------------------------------------------------- search order and IDX checks
def test_search_order(isolated, monkeypatch):
    tmp = isolated
    env_dir = tmp / "env"
    cache_dir = tmp / "home" / ".cache" / "ember" / "fashion-mnist"
    sys_dir = tmp / "sys" / "fashion-mnist"
    monkeypatch.setattr(mnist_mod, "SYSTEM_DIR", str(tmp / "sys"))
    _write_split(sys_dir, n=4)
    assert len(FashionMNIST(train=False)) == 4 and FashionMNIST(train=False).folder == sys_dir
    _write_split(cache_dir, n=3)
    assert len(FashionMNIST(train=False)) == 3
    _write_split(env_dir / "fashion-mnist", n=2, gz=False)  # uncompressed files work too
    monkeypatch.setenv("EMBER_DATA", str(env_dir))
    assert len(FashionMNIST(train=False)) == 2
    _write_split(tmp / "root" / "FashionMNIST" / "raw", n=6)  # torchvision's layout under root
    assert len(FashionMNIST(root=tmp / "root", train=False)) == 6
    _write_split(tmp / "root", n=1)
    assert len(FashionMNIST(root=tmp / "root", train=False)) == 1
    assert len(MNIST(root=tmp / "root", train=False)) == 1  # same file names
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        FashionMNIST(root=tmp / "root", train=True, download=False)


def test_missing_files_error_lists_places(isolated):
    with pytest.raises(DatasetError) as ei:
        MNIST(train=False)
    msg = str(ei.value)
    assert ".cache/ember/mnist" in msg and "download=True" in msg


def test_idx_validation(isolated):
    d = isolated / "bad"
    imgs, lbls = _write_split(d, n=3, gz=False)
    raw = (d / "t10k-images-idx3-ubyte").read_bytes()
    (d / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(DatasetError, match="truncated IDX file"):
        FashionMNIST(root=d, train=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(gzip.compress(raw)[:-50])  # truncated gzip stream
    with pytest.raises(DatasetError, match="gzip stream is damaged or truncated"):
        FashionMNIST(root=d, train=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n" + raw)
    with pytest.raises(DatasetError, match="magic"):
        FashionMNIST(root=d, train=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(raw + b"xx")
    with pytest.raises(DatasetError, match="unexpected bytes"):
        FashionMNIST(root=d, train=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((4, 28, 28), np.uint8)))
    with pytest.raises(DatasetError, match="do not belong together"):
        FashionMNIST(root=d, train=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(raw)
    (d / "t10k-labels-idx1-ubyte").write_bytes(raw)
    with pytest.raises(DatasetError, match="dimensions"):
        FashionMNIST(root=d, train=False)
    a = np.arange(12, dtype=np.int32).reshape(3, 4) * 1000
    (d / "x.idx").write_bytes(_idx(a))
    assert np.array_equal(read_idx(d / "x.idx"), a) and read_idx(d / "x.idx").dtype == np.int32


# ---------------------------------------------------------------- downloads from a local server
@contextlib.contextmanager
def _serve(directory):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_official(monkeypatch, tmp_path):
    """A fake 'official' mirror of small files, with their MD5s registered as the official ones."""
    srv = tmp_path / "srv"
    _write_split(srv, n=7, train=True, seed=1)
    _write_split(srv, n=3, train=False, seed=2)
    md5s = {f: hashlib.md5((srv / f).read_bytes()).hexdigest() for f in FILES}
    monkeypatch.setattr(FashionMNIST, "resources", md5s)
    monkeypatch.setattr(FashionMNIST, "content_sha256", {})
    return srv


def test_download_into_root_and_cache(isolated, monkeypatch, tiny_official):
    with _serve(tiny_official) as url:
        monkeypatch.setattr(FashionMNIST, "mirrors", ["http://127.0.0.1:9/unreachable/", url])
        root = isolated / "data"
        ds = FashionMNIST(root=root, train=True, download=True)
        assert len(ds) == 7 and sorted(p.name for p in root.iterdir()) == sorted(FILES)
        assert len(FashionMNIST(root=root, train=False)) == 3  # all four files were fetched
        ds2 = FashionMNIST(train=False, download=True)  # no root: into ~/.cache/ember/fashion-mnist
        assert ds2.folder == isolated / "home" / ".cache" / "ember" / "fashion-mnist"


def test_download_checksum_mismatch_keeps_nothing(isolated, monkeypatch, tiny_official):
    bad = isolated / "bad_srv"
    shutil.copytree(tiny_official, bad)
    f = bad / "train-images-idx3-ubyte.gz"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with _serve(bad) as url:
        monkeypatch.setattr(FashionMNIST, "mirrors", [url])
        root = isolated / "data"
        with pytest.raises(DatasetError, match="checksum mismatch"):
            FashionMNIST(root=root, train=True, download=True)
        assert not (root / "train-images-idx3-ubyte.gz").exists()
        assert not [p for p in root.iterdir() if ".tmp-" in p.name]
        with _serve(isolated / "empty_srv_does_not_exist") as url404:
            monkeypatch.setattr(FashionMNIST, "mirrors", [url404])
            with pytest.raises(DatasetError, match="could not download"):
                FashionMNIST(root=isolated / "data2", train=True, download=True)


@needs_data
def test_download_real_files_accepted_by_content_hash(isolated, monkeypatch):
    """The local copy is recompressed (its gzip MD5s differ from Zalando's), so it is accepted by
    the SHA-256 of its content (corrupted files are refused: see the test above)."""
    with _serve(FMNIST) as url:
        monkeypatch.setattr(FashionMNIST, "mirrors", [url])
        root = isolated / "dl"
        ds = FashionMNIST(root=root, train=False, download=True)
        assert len(ds) == 10_000
        for f in FILES:
            assert (root / f).read_bytes() == (FMNIST / f).read_bytes()
