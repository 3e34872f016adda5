"""Under mpiexec -n 4: 2 pipeline stages x 2 data-parallel replicas (DT-4). argv: out_prefix.

Ranks 2k, 2k + 1 are replica k's stages 0 and 1 (a pipeline group each); ranks {0, 2} and {1, 3}
hold the same stage (a data-parallel group each). Each replica pipelines half of the batch (1F1B,
4 micro-batches), then each stage averages its gradients over its data-parallel group only.
Rank r writes out_prefix.r.npz: its stage's gradient error against the whole model's full-batch
gradients, and the all-reduce calls each group made."""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
world = dist.init_process_group()
r = world.rank
replica, stage_idx = r // 2, r % 2
pipes = [dist.new_group([0, 1]), dist.new_group([2, 3])]
dps = [dist.new_group([0, 2]), dist.new_group([1, 3])]
pipe, dp = pipes[replica], dps[stage_idx]
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 32)).astype(np.float32)
Y = rng.integers(0, 4, 64)
loss_fn = nn.CrossEntropyLoss()


def layers():
    ember.manual_seed(11)
    return [nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4)]


full = nn.Sequential(*layers())
loss_fn(full(ember.tensor(X)), ember.tensor(Y)).backward()
cut = 3
ref = [p.grad.numpy() for m in (list(full)[:cut] if stage_idx == 0 else list(full)[cut:]) for p in m.parameters()]
mod = nn.Sequential(*(layers()[:cut] if stage_idx == 0 else layers()[cut:]))
stage = dist.PipelineStage(mod, process_group=pipe)
half = slice(replica * 32, (replica + 1) * 32)
stage.train_step(ember.tensor(X[half]) if stage_idx == 0 else None,
                 ember.tensor(Y[half]) if stage_idx == 1 else None, loss_fn, micro_batches=4, schedule="1f1b")
for p in mod.parameters():
    dist.all_reduce(p.grad, op="avg", group=dp, algorithm="ring")
err = max(float(np.abs(p.grad.numpy() - q).max()) for p, q in zip(mod.parameters(), ref))
np.savez(f"{out}.{r}.npz", err=err, dp_calls=dp.stats["calls:all_reduce:ring"],
         pipe_calls=sum(v for k, v in pipe.stats.items() if k.startswith("calls:all_reduce")),
         world_calls=sum(v for k, v in world.stats.items() if k.startswith("calls:all_reduce")))
dist.destroy_process_group()
