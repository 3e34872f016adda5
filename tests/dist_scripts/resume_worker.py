"""DMLP-6: data-parallel SGD with checkpoints every 3 steps; optionally rank 1 dies at a step.

argv: ckpt_dir out.npz [fsdp]. With fsdp the model is FullyShardedDataParallel (ZeRO-3) under
AdamW, with sharded checkpoints. EMBER_TEST_KILL_STEP=k makes rank 1 SIGKILL itself in step k (after its
forward, while rank 0 waits in the gradient all-reduce). Under `ember launch --resume` the newest
checkpoint is restored and the run continues from its data position (epoch, batch, seed).
"""
import os
import signal
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn
from ember.checkpoint import CheckpointManager
from ember.data import DataLoader, TensorDataset

ckpt_dir, out = sys.argv[1], sys.argv[2]
sharded = sys.argv[3:] == ["fsdp"]
kill_step = int(os.environ.get("EMBER_TEST_KILL_STEP", "-1"))
g = dist.init_process_group()
r = g.rank
ember.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 4))
if sharded:
    ddp = dist.FullyShardedDataParallel(model)
    opt = ember.optim.AdamW(ddp.parameters(), lr=0.01)
    save, load = dist.save_sharded_checkpoint, dist.load_sharded_checkpoint
else:
    ddp = dist.DistributedDataParallel(model)
    opt = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    save, load = dist.save_checkpoint, dist.load_checkpoint
rng = np.random.default_rng(0)
ds = TensorDataset(ember.tensor(rng.standard_normal((256, 8)).astype(np.float32)),
                   ember.tensor(rng.integers(0, 4, 256)))
sampler = dist.DistributedSampler(ds, seed=42)
loader = DataLoader(ds, batch_size=16, sampler=sampler)
mgr = CheckpointManager(ckpt_dir, keep=2)
epochs, start_epoch, skip, step = 2, 0, 0, 0
if dist.resume_requested():
    pos = load(mgr, ddp, opt, sampler=sampler)
    if pos is not None:
        start_epoch, skip, step = pos["epoch"], pos["batch"], pos["step"]
        if r == 0:
            print(f"resumed at step {step} (epoch {start_epoch}, batch {skip})", flush=True)
ember.manual_seed(1000 + r)  # per-rank dropout streams, restored per step below
loss_fn = nn.CrossEntropyLoss()
for epoch in range(start_epoch, epochs):
    sampler.set_epoch(epoch)
    nb = len(loader)
    for b, (xb, yb) in enumerate(loader):
        if epoch == start_epoch and b < skip:
            continue
        ember.manual_seed(10_000 * step + r)  # dropout depends only on (step, rank): resumable
        loss = loss_fn(ddp(xb), yb)
        if step == kill_step and r == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 3 == 0:
            done_epoch = b + 1 == nb
            save(mgr, step, ddp, opt, epoch=epoch + 1 if done_epoch else epoch,
                 batch=0 if done_epoch else b + 1, sampler=sampler)
params = list(ddp.full_state_dict().values()) if sharded else [p.detach() for p in model.parameters()]
if r == 0:
    np.savez(out, **{f"p{i}": p.numpy() for i, p in enumerate(params)}, step=np.array(step))
dist.destroy_process_group()
