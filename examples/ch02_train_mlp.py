"""Chapter 2 (programming interface): a model, a loss, an optimizer, a data loader, a training
loop, evaluation and a checkpoint, all with PyTorch's names.

    python3 examples/ch02_train_mlp.py [--steps N]
"""
import argparse
import os
import tempfile

import ember
import ember.nn as nn
from ember.data import DataLoader, TensorDataset
from ember.datasets import spiral


def main(steps: int) -> float:
    ember.manual_seed(0)
    x, y = spiral(200)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2)
    sched = ember.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    while step < steps:
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == steps:
                print(f"step {step:4d}  loss {loss:.4f}  lr {opt.param_groups[0]['lr']:.5f}")
            if step == steps:
                break
    model.eval()
    with ember.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    path = os.path.join(tempfile.mkdtemp(), "mlp.safetensors")
    ember.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, path)
    restored = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    restored.load_state_dict(ember.load(path)["model"])
    with ember.no_grad():
        same = bool((restored(x) == model(x)).all())
    print(f"accuracy {acc:.3f}; checkpoint {path} restores the same predictions: {same}")
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    main(ap.parse_args().steps)
