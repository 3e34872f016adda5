"""MNIST and Fashion-MNIST from their IDX files (gzipped or not).

Where the files are looked for, in order (the first directory holding the split's image and label
files wins):

1. `root`, ``root/<name>`` and ``root/<ClassName>/raw`` (torchvision's layout), if `root` is given;
2. ``$EMBER_DATA`` and ``$EMBER_DATA/<name>``;
3. ``~/.cache/ember/<name>``;
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package).

``<name>`` is ``fashion-mnist`` or ``mnist``. With ``download=True`` and no copy found, the four
official files are downloaded (urllib) into `root` if given, else ``~/.cache/ember/<name>``; each
is checked against the official MD5 before an atomic rename (a mirror that recompressed the files is
accepted when the uncompressed content matches the known SHA-256, where ember knows it).
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset
from .utils import DatasetError, download_file, read_idx

__all__ = ["MNIST", "FashionMNIST"]

#: the system-wide dataset directory (Debian's dataset-* packages); tests may point it elsewhere
SYSTEM_DIR = "/usr/share/datasets"

_SPLITS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class MNIST(Dataset):
    """The MNIST handwritten digits: 60,000 training and 10,000 test images, 28x28 uint8.

    ``ds[i]`` is ``(image, label)``: the uint8 (28, 28) numpy image passed through `transform`
    (if any) and the int label passed through `target_transform`. ``ds.data`` is the uint8
    (N, 28, 28) array, ``ds.targets`` the int64 (N,) labels; `as_tensors` gives the whole split as
    float32 (N, 1, 28, 28) and int64 (N,) Tensors for `ember.data.TensorDataset`.
    """

    name = "mnist"
    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/"]
    #: MD5 of the official gzipped files
    resources = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    #: SHA-256 of the uncompressed files, where known (accepts recompressed mirrors)
    content_sha256: dict = {}
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine"]
    mean, std = 0.1307, 0.3081

    def __init__(self, root=None, train: bool = True, download: bool = False, transform=None,
                 target_transform=None):
        self.root = None if root is None else Path(root).expanduser()
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        img_name, lbl_name = _SPLITS[self.train]
        found = self._find(img_name, lbl_name)
        if found is None:
            if not download:
                raise DatasetError(
                    f"{type(self).__name__}: no {img_name}(.gz) and {lbl_name}(.gz) in any of: "
                    + ", ".join(str(d) for d in self.search_dirs())
                    + ". Pass root=<directory with the files>, set $EMBER_DATA, or use download=True.")
            self.download()
            found = self._find(img_name, lbl_name)
            if found is None:  # pragma: no cover - download() raises on every failure
                raise DatasetError(f"{type(self).__name__}: download finished but the files are missing")
        img_path, lbl_path = found
        self.folder = img_path.parent
        images = read_idx(img_path, expect_ndim=3)
        labels = read_idx(lbl_path, expect_ndim=1)
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{img_path}: expected uint8 images of 28x28, got {images.dtype} {images.shape}")
        if labels.dtype != np.uint8:
            raise DatasetError(f"{lbl_path}: expected uint8 labels, got {labels.dtype}")
        if len(images) != len(labels):
            raise DatasetError(f"{img_path} holds {len(images)} images but {lbl_path} holds "
                               f"{len(labels)} labels: the files do not belong together")
        if labels.size and labels.max() >= len(self.classes):
            raise DatasetError(f"{lbl_path}: label {int(labels.max())} is out of range "
                               f"[0, {len(self.classes)})")
        self.data = images
        self.targets = labels.astype(np.int64)

    # ---- files
    def search_dirs(self) -> list:
        """The directories searched for the files, in order."""
        dirs = []
        if self.root is not None:
            dirs += [self.root, self.root / self.name, self.root / type(self).__name__ / "raw"]
        env = os.environ.get("EMBER_DATA")
        if env:
            dirs += [Path(env).expanduser(), Path(env).expanduser() / self.name]
        dirs += [Path.home() / ".cache" / "ember" / self.name, Path(SYSTEM_DIR) / self.name]
        return dirs

    @staticmethod
    def _file(d: Path, base: str):
        for n in (base + ".gz", base):
            p = d / n
            if p.is_file():
                return p
        return None

    def _find(self, img_name: str, lbl_name: str):
        for d in self.search_dirs():
            img, lbl = self._file(d, img_name), self._file(d, lbl_name)
            if img is not None and lbl is not None:
                return img, lbl
        return None

    def download_dir(self) -> Path:
        return self.root if self.root is not None else Path.home() / ".cache" / "ember" / self.name

    def download(self) -> Path:
        """Fetch the four official files into `download_dir()` (skipping ones already there)."""
        target = self.download_dir()
        target.mkdir(parents=True, exist_ok=True)
        for fname, md5 in self.resources.items():
            dest = target / fname
            if dest.is_file():
                continue
            errors = []
            for base in self.mirrors:
                url = base.rstrip("/") + "/" + fname
                try:
                    download_file(url, dest, md5=md5, check=self._content_check(fname))
                    break
                except DatasetError as e:
                    errors.append(str(e))
            else:
                raise DatasetError(f"{type(self).__name__}: could not download {fname}: " + "; ".join(errors))
        return target

    def _content_check(self, fname: str):
        want = self.content_sha256.get(fname[:-3] if fname.endswith(".gz") else fname)
        if want is None:
            return None

        def check(path) -> bool:
            try:
                with open(path, "rb") as f:
                    data = f.read()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
            except (OSError, EOFError):
                return False
            return hashlib.sha256(data).hexdigest() == want
        return check

    # ---- samples
    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        index = int(index)
        img, target = self.data[index], int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def as_tensors(self, normalize: bool = True, standardize: bool = False):
        """The whole split as ``(images, labels)`` Tensors, for `ember.data.TensorDataset`.

        images: (N, 1, 28, 28) float32 scaled to [0, 1] (``x / 255``) when `normalize`, further
        standardized as ``(x - mean) / std`` with the dataset's constants when `standardize`;
        uint8 with neither. labels: (N,) int64. Transforms are not applied.
        """
        from ..tensor import from_numpy
        x = self.data[:, None, :, :]
        if normalize or standardize:
            x = x.astype(np.float32)
            x /= np.float32(255.0)
            if standardize:
                x -= np.float32(self.mean)
                x /= np.float32(self.std)
        else:
            x = x.copy()
        return from_numpy(x), from_numpy(self.targets.copy())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={'train' if self.train else 'test'}, n={len(self)}, "
                f"folder={str(self.folder)!r})")


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: 60,000 training and 10,000 test 28x28 grayscale images of 10
    clothing classes, a drop-in replacement for MNIST (same files, same API)."""

    name = "fashion-mnist"
    mirrors = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
               "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"]
    resources = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    content_sha256 = {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
               "Bag", "Ankle boot"]
    mean, std = 0.2860, 0.3530
