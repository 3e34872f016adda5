"""The flagship CNN trained 1 epoch of Fashion-MNIST on 2 ranks with DDP, its gradients all-reduced
uncompressed and as fp16, bf16 and fp8 (DT-13, LAB-4): the final loss and test accuracy of each,
and the bytes one step sends.

    ember launch -n 2 bench/ddp_compress.py [--epochs 1] [--subset N] [--codecs none,fp16,bf16,fp8]

The recipe's model, AdamW (lr 2e-3, weight decay 1e-4) and batch (128 global: 64 a rank), eager;
every codec starts from the same weights and sees the same batches in the same order; all of them
run over ember's ring all-reduce, so the bytes compare like for like. Rank 0 prints one row per
codec: the mean training loss over the last 50 steps, test loss and accuracy on the 10,000 test
images, bytes sent per step, and the changes against uncompressed (target: the final loss within 1%).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ember  # noqa: E402
import ember.distributed as dist  # noqa: E402
from ember import nn  # noqa: E402
from ember.recipes.fashion_mnist import FashionCNN  # noqa: E402

from compress_accuracy import load_data  # noqa: E402  (finds ../shared/data or the system copy)

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--subset", type=int, default=None)
ap.add_argument("--codecs", default="none,fp16,bf16,fp8")
a = ap.parse_args()
g = dist.init_process_group()
n, r = g.size, g.rank
d = load_data(subset=a.subset)
xtr, ytr = d.x_train.numpy(), d.y_train.numpy()
per = 128 // n
steps = a.epochs * (len(ytr) // 128)
order = np.concatenate([np.random.default_rng(e).permutation(len(ytr)) for e in range(a.epochs)])
loss_fn = nn.CrossEntropyLoss()
rows = []
for name in a.codecs.split(","):
    ember.manual_seed(0)
    model = FashionCNN()
    ddp = dist.DistributedDataParallel(model, algorithm="ring", compression=None if name == "none" else name)
    opt = ember.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    losses, sent, t0 = [], 0, time.perf_counter()
    for s in range(steps):
        idx = order[s * 128 + r * per: s * 128 + (r + 1) * per]
        before = g.stats["bytes_sent"]
        loss = loss_fn(ddp(ember.tensor(xtr[idx])), ember.tensor(ytr[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sent += g.stats["bytes_sent"] - before
        losses.append(float(loss.detach().numpy()))
    seconds = time.perf_counter() - t0
    model.eval()
    with ember.no_grad():
        logits = np.concatenate([model(d.x_test[i:i + 1000]).numpy() for i in range(0, len(d.y_test), 1000)])
    yt = d.y_test.numpy()
    z = logits - logits.max(1, keepdims=True)
    test_loss = float(-(z[np.arange(len(yt)), yt] - np.log(np.exp(z).sum(1))).mean())
    rows.append((name, float(np.mean(losses[-50:])), test_loss, float((logits.argmax(1) == yt).mean()),
                 sent / steps, seconds))
if r == 0:
    print(f"{n} ranks, {steps} steps ({a.epochs} epoch(s) of {len(ytr)} images, batch 128), ember's ring all-reduce")
    print(f"{'codec':6s} {'train loss':>10s} {'vs none':>8s} {'test loss':>9s} {'vs none':>8s} {'test acc':>8s} "
          f"{'bytes/step':>10s} {'vs none':>8s} {'time':>6s}")
    base = rows[0]
    for name, tl, vl, acc, b, sec in rows:
        print(f"{name:6s} {tl:10.4f} {(tl - base[1]) / base[1]:+8.2%} {vl:9.4f} {(vl - base[2]) / base[2]:+8.2%} "
              f"{acc:8.2%} {b:10.0f} {b / base[4]:8.3f} {sec:5.0f}s")
dist.destroy_process_group()
