"""DataLoader throughput: ember vs PyTorch at 0, 1 and 2 workers on Fashion-MNIST.

Two modes, reported separately:
* per-sample: ``dataset[i]`` decodes one uint8 28x28 image and applies ToTensor -> random
  horizontal flip -> Normalize; the loader collates 128 samples per batch (default collate).
* batched: ``dataset[b]`` returns batch b (128 images) transformed with vectorised whole-batch ops;
  the loader runs with ``batch_size=None``.

ember uses `ember.data.transforms`; torchvision is not installed in /work/torchenv, so the PyTorch
side uses the same transforms written with plain torch tensor ops (div, flip, where, sub/div).
Worker pools are persistent and warmed up (one untimed epoch), so the numbers are steady-state
epochs, not process start-up. ember starts workers with forkserver, PyTorch with its default (fork).
Each library runs in its own process (``--lib``); the driver interleaves rounds of both and prints
median epoch times, items/s and ember/torch time ratios (< 1: ember faster).

    python bench/dataloader.py [--rounds 3] [--n 10000] [--torch-python /work/torchenv/bin/python]
    python bench/dataloader.py --cpu-bound     # DP-8: a ~2 ms GIL-holding item, 0 vs 2 workers
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time

def _data_dir() -> str:
    """$FASHION_MNIST, else the folder ember.datasets finds the files in ($EMBER_DATA, the cache,
    /usr/share/datasets)."""
    if os.environ.get("FASHION_MNIST"):
        return os.environ["FASHION_MNIST"]
    from ember.datasets import FashionMNIST
    return str(FashionMNIST(train=True)._find("train-images-idx3-ubyte", "train-labels-idx1-ubyte")[0].parent)


DATA = _data_dir()
MEAN, STD, BS = 0.2860, 0.3530, 128


def load(n):
    import numpy as np
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()
    with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64)
    return x, y


# ---------------------------------------------------------------- DP-8: a CPU-bound Python item
class Spin:
    """An item that holds the GIL for ~2 ms of pure-Python work."""

    def __len__(self):
        return 240

    def __getitem__(self, i):
        import numpy as np
        t0 = time.perf_counter()
        s = 0
        while time.perf_counter() - t0 < 0.002:
            s += 1
        return np.full((4,), i, np.int64)


def cpu_bound_speedup(rounds: int) -> None:
    """Median and best epoch-time ratio of 0 workers over 2 workers (target >= 1.7x on 2 cores)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from ember.data import DataLoader
    ds = Spin()
    par = DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=True)

    def epoch(loader):
        t = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - t
    epoch(par)
    ratios = [epoch(DataLoader(ds, batch_size=8)) / epoch(par) for _ in range(rounds)]
    print(f"2 ms GIL-holding items, 240 per epoch: 0 workers / 2 workers = median "
          f"{statistics.median(ratios):.2f}x, best {max(ratios):.2f}x over {rounds} rounds "
          f"({os.cpu_count()} CPUs)")


# ---------------------------------------------------------------- ember side
class EmberSample:
    def __init__(self, x, y):
        from ember.data import transforms as T
        self.x, self.y = x, y
        self.t = T.Compose([T.ToTensor(), T.RandomHorizontalFlip(), T.Normalize([MEAN], [STD])])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.t(self.x[i]), int(self.y[i])


class EmberBatch(EmberSample):
    def __len__(self):
        return -(-len(self.y) // BS)

    def __getitem__(self, b):
        import ember
        s = slice(b * BS, (b + 1) * BS)
        return ember.tensor(self.t.batch(self.x[s])), ember.tensor(self.y[s])


def ember_loader(mode, x, y, workers):
    from ember.data import DataLoader
    if mode == "per-sample":
        return DataLoader(EmberSample(x, y), batch_size=BS, num_workers=workers,
                          persistent_workers=workers > 0)
    return DataLoader(EmberBatch(x, y), batch_size=None, num_workers=workers, persistent_workers=workers > 0)


# ---------------------------------------------------------------- torch side
class TorchSample:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        import torch
        img = torch.from_numpy(self.x[i]).unsqueeze(0).float().div_(255)
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - MEAN) / STD, int(self.y[i])


class TorchBatch(TorchSample):
    def __len__(self):
        return -(-len(self.y) // BS)

    def __getitem__(self, b):
        import torch
        s = slice(b * BS, (b + 1) * BS)
        img = torch.from_numpy(self.x[s]).unsqueeze(1).float().div_(255)
        flip = (torch.rand(img.shape[0]) < 0.5).view(-1, 1, 1, 1)
        img = torch.where(flip, img.flip(-1), img)
        return (img - MEAN) / STD, torch.from_numpy(self.y[s])


def torch_loader(mode, x, y, workers):
    from torch.utils.data import DataLoader
    if mode == "per-sample":
        return DataLoader(TorchSample(x, y), batch_size=BS, num_workers=workers, persistent_workers=workers > 0)
    return DataLoader(TorchBatch(x, y), batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def run_lib(lib, n):
    if lib == "torch":
        import torch
        torch.set_num_threads(1)
    x, y = load(n)
    make = ember_loader if lib == "ember" else torch_loader
    out = {}
    for mode in ("per-sample", "batched"):
        for w in (0, 1, 2):
            loader = make(mode, x, y, w)
            count = sum(1 for _ in loader)  # warm-up epoch (starts persistent workers)
            t = time.perf_counter()
            for _ in loader:
                pass
            out[f"{mode}/{w}"] = time.perf_counter() - t
            del loader
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--torch-python", default="/work/torchenv/bin/python")
    ap.add_argument("--cpu-bound", action="store_true", help="DP-8 speed-up of a GIL-holding item")
    a = ap.parse_args()
    if a.cpu_bound:
        return cpu_bound_speedup(max(a.rounds, 5))
    if a.lib:
        return run_lib(a.lib, a.n)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    here = os.path.abspath(__file__)
    res = {"ember": [], "torch": []}
    for r in range(a.rounds):
        for lib, py in (("ember", sys.executable), ("torch", a.torch_python)):
            p = subprocess.run([py, here, "--lib", lib, "--n", str(a.n)], capture_output=True, text=True,
                               env=env, cwd=os.path.dirname(os.path.dirname(here)))
            if p.returncode:
                sys.exit(f"{lib} failed:\n{p.stderr}")
            res[lib].append(json.loads(p.stdout.strip().splitlines()[-1]))
    print(f"Fashion-MNIST, {a.n} images, batch {BS}, median of {a.rounds} interleaved rounds, "
          f"steady-state epoch (persistent workers), {os.cpu_count()} CPUs")
    print(f"{'mode':<11} {'workers':>7} {'ember s':>9} {'torch s':>9} {'ember img/s':>12} "
          f"{'torch img/s':>12} {'ember/torch':>12}")
    for key in res["ember"][0]:
        e = statistics.median(d[key] for d in res["ember"])
        t = statistics.median(d[key] for d in res["torch"])
        mode, w = key.split("/")
        print(f"{mode:<11} {w:>7} {e:>9.3f} {t:>9.3f} {a.n / e:>12,.0f} {a.n / t:>12,.0f} {e / t:>12.2f}")


if __name__ == "__main__":
    main()
