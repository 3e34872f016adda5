"""The flagship job: a small CNN trained on Fashion-MNIST, evaluated, checkpointed.

`ember train` runs `main`; tests call `train` with one epoch. Everything below is ember's public
API: datasets, DataLoader, nn modules, an optimizer and a scheduler, checkpoints and metrics.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import ember
from ember import nn
from ember.data import DataLoader, TensorDataset
from ember.datasets import FashionMNIST


class FashionCNN(nn.Module):
    """conv3x3(1->c1)-BN-ReLU-pool, conv3x3(c1->c2)-BN-ReLU-pool, linear(c2*49->hidden)-ReLU-dropout-linear(10)."""

    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass
class Config:
    """Settings of the flagship run (the defaults reach >= 90% test accuracy)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    data: str | None = None
    out: str = "runs/fashion_mnist"
    keep: int = 3
    progress: bool = True
    limit_train: int | None = None  # use only the first N training images (quick runs)
    jit: bool = True  # compile the training step with ember.jit (eager when False)
    channels: tuple = field(default=(16, 32))


def evaluate(model: nn.Module, x, y, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode without the tape."""
    model.eval()
    correct = 0
    with ember.no_grad():
        for i in range(0, len(y), batch_size):
            pred = model(x[i:i + batch_size]).argmax(1)
            correct += int((pred == y[i:i + batch_size]).sum().item())
    return correct / max(len(y), 1)


def train(cfg: Config) -> dict:
    """Train, evaluate and checkpoint; returns {"test_accuracy", "train_seconds", "checkpoint", ...}."""
    from tqdm import tqdm

    ember.manual_seed(cfg.seed)
    train_set = FashionMNIST(cfg.data, train=True, download=True)  # downloads only if not found
    test_set = FashionMNIST(cfg.data, train=False, download=True)
    x_train, y_train = train_set.as_tensors(standardize=True)
    x_test, y_test = test_set.as_tensors(standardize=True)
    if cfg.limit_train:
        x_train, y_train = x_train[:cfg.limit_train], y_train[:cfg.limit_train]
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=True, generator=ember.Generator().manual_seed(cfg.seed))
    model = FashionCNN(*cfg.channels)
    opt = ember.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    loss_fn = nn.CrossEntropyLoss()
    manager = ember.checkpoint.CheckpointManager(cfg.out, keep=cfg.keep)

    def train_step(x, y):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    if cfg.jit:  # traced once: forward, backward, AdamW and BatchNorm statistics in one graph
        train_step = ember.jit(train_step)

    t0 = time.perf_counter()
    step = 0
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, unit="batch")
        seen, t_epoch = 0, time.perf_counter()
        for x, y in bar:
            loss = train_step(x, y)
            sched.step()
            step += 1
            seen += len(y)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                samples_per_s=f"{seen / (time.perf_counter() - t_epoch):.0f}")
        acc = evaluate(model, x_test, y_test)
        history.append(acc)
        manager.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "epoch": epoch + 1, "test_accuracy": acc}, step)
        if cfg.progress:
            print(f"epoch {epoch + 1}: test accuracy {acc:.4f}", flush=True)
    seconds = time.perf_counter() - t0
    return {"test_accuracy": history[-1], "history": history, "train_seconds": seconds, "steps": step,
            "checkpoint": str(manager.path_for(step))}


def main(argv=None) -> dict:
    """`ember train`: parse the flags, train, print the result."""
    import argparse

    ap = argparse.ArgumentParser(prog="ember train", description=__doc__)
    d = Config()
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files "
                    "(default: $EMBER_DATA, ~/.cache/ember, /usr/share/datasets/fashion-mnist)")
    ap.add_argument("--out", default=d.out, help="checkpoint folder")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-jit", action="store_true", help="run the training step eagerly")
    a = ap.parse_args(argv)
    cfg = Config(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, data=a.data, out=a.out,
                 limit_train=a.limit_train, progress=not a.no_progress, jit=not a.no_jit)
    res = train(cfg)
    print(f"test accuracy {res['test_accuracy']:.4f} after {res['steps']} steps in {res['train_seconds']:.0f} s; "
          f"checkpoint {res['checkpoint']}")
    return res
