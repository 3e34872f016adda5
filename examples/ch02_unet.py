"""Chapter 2 (programming interface, PI-3): a small U-Net denoising 32x32 images, trained with one
jitted step (forward, MSE loss, backward, AdamW).

    python3 examples/ch02_unet.py [--steps N] [--batch B] [--channels C] [--noise S] [--data auto|synthetic]

Two levels down (Conv2d + GroupNorm + ReLU blocks, MaxPool2d) and two up: the first with a
ConvTranspose2d, the second with F.interpolate(mode="bilinear") and a 1x1 conv, each followed by a
concatenation with the encoder's features at that resolution (the skip connections). The network
predicts the noise that was added (a residual), so its output is the input minus that prediction.

The images are Fashion-MNIST's (padded from 28x28 to 32x32) when ember.datasets.FashionMNIST finds
the files ($EMBER_DATA/fashion-mnist, ~/.cache/ember/fashion-mnist or /usr/share/datasets/fashion-mnist),
else synthetic rectangles and discs, so the example always runs.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F

SIZE = 32


def synthetic_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 1, 32, 32) float32 in [0, 1]: a few random rectangles and discs on a dark background."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((n, 1, SIZE, SIZE), np.float32)
    for i in range(n):
        img = np.zeros((SIZE, SIZE), np.float32)
        for _ in range(rng.integers(1, 4)):
            v = rng.uniform(0.4, 1.0)
            if rng.random() < 0.5:
                y0, x0 = rng.integers(0, SIZE - 6, 2)
                h, w = rng.integers(4, 14, 2)
                img[y0:y0 + h, x0:x0 + w] = v
            else:
                cy, cx, r = rng.uniform(6, SIZE - 6), rng.uniform(6, SIZE - 6), rng.uniform(3, 8)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = v
        out[i, 0] = img
    return out


def load_images(source: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Fashion-MNIST's training images padded to 32x32 if found (and not `synthetic`), else synthetic ones."""
    if source != "synthetic":
        try:
            from ember.datasets import FashionMNIST
            data = FashionMNIST(train=True).data[:8192].astype(np.float32) / 255.0
            return np.pad(data, ((0, 0), (2, 2), (2, 2)))[:, None], "Fashion-MNIST"
        except Exception as e:  # DatasetError: no copy of the files here
            if source == "fashion":
                raise
            print(f"(Fashion-MNIST not found: {type(e).__name__}; using synthetic shapes)")
    return synthetic_images(2048, rng), "synthetic shapes"


class Block(nn.Module):
    """(Conv2d 3x3 -> GroupNorm -> ReLU) twice."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class UNet(nn.Module):
    """A two-level U-Net: 32 -> 16 -> 8 -> 16 (ConvTranspose2d) -> 32 (bilinear), with skips."""

    def __init__(self, channels: int = 16, groups: int = 4):
        super().__init__()
        c = channels
        self.enc1 = Block(1, c, groups)
        self.enc2 = Block(c, 2 * c, groups)
        self.mid = Block(2 * c, 4 * c, groups)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, kernel_size=2, stride=2)
        self.dec2 = Block(4 * c, 2 * c, groups)
        self.up1 = nn.Conv2d(2 * c, c, kernel_size=1)
        self.dec1 = Block(2 * c, c, groups)
        self.head = nn.Conv2d(c, 1, kernel_size=1)

    def forward(self, x):
        e1 = self.enc1(x)                                   # (N, c, 32, 32)
        e2 = self.enc2(self.pool(e1))                       # (N, 2c, 16, 16)
        m = self.mid(self.pool(e2))                         # (N, 4c, 8, 8)
        d2 = self.dec2(ember.cat([self.up2(m), e2], 1))     # transposed conv up, skip from e2
        u1 = self.up1(F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False))
        d1 = self.dec1(ember.cat([u1, e1], 1))              # bilinear up, skip from e1
        return x - self.head(d1)                            # the input minus the predicted noise


def main(steps: int, batch: int, channels: int, noise: float, source: str, lr: float) -> float:
    """Train the U-Net for `steps` jitted steps; return the last loss."""
    ember.manual_seed(0)
    rng = np.random.default_rng(0)
    images, name = load_images(source, rng)
    print(f"data: {len(images)} {name} images, 1x{SIZE}x{SIZE}, noise sigma {noise}")
    model = UNet(channels, groups=min(4, channels))
    print(f"U-Net with {sum(p.numel() for p in model.parameters())} parameters")
    opt = ember.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)

    @ember.jit
    def train_step(noisy, clean):
        opt.zero_grad()
        loss = F.mse_loss(model(noisy), clean)
        loss.backward()
        opt.step()
        return loss

    first = last = None
    times = []
    for step in range(1, steps + 1):
        clean = images[rng.integers(0, len(images), batch)]
        noisy = (clean + rng.standard_normal(clean.shape).astype(np.float32) * noise).astype(np.float32)
        t0 = time.perf_counter()
        loss = train_step(ember.tensor(noisy), ember.tensor(clean)).item()
        times.append(time.perf_counter() - t0)
        first = loss if first is None else first
        last = loss
        if step % max(1, steps // 5) == 0 or step == 1 or step == steps:
            psnr = 10 * math.log10(1.0 / max(loss, 1e-12))
            print(f"step {step:4d}  loss {loss:.5f}  PSNR {psnr:5.2f} dB  (noisy input: "
                  f"{10 * math.log10(1.0 / noise ** 2):5.2f} dB)")
    if len(times) > 1:
        print(f"first step (trace + compile) {times[0]:.2f} s; then {1e3 * float(np.median(times[1:])):.1f} ms "
              f"per jitted step at batch {batch}, {channels} channels")
    print(f"loss went from {first:.5f} to {last:.5f}: learning: {last < first}")
    return last


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--data", choices=("auto", "fashion", "synthetic"), default="auto")
    a = ap.parse_args()
    main(a.steps, a.batch, a.channels, a.noise, a.data, a.lr)
