"""Under `ember launch -n 2`: a 2-stage pipeline (1F1B, 4 micro-batches) whose last stage SIGKILLs
itself in its second micro-batch's forward of step 2; rank 0 then waits for a gradient that never
comes and must raise RankFailureError naming rank 1."""
import os
import signal

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

g = dist.init_process_group()
r = g.rank
calls = [0]


class Dies(nn.Module):
    def forward(self, x):
        calls[0] += 1
        if calls[0] == 4 + 2:  # step 2 (4 micro-batches a step), micro-batch 2
            os.kill(os.getpid(), signal.SIGKILL)
        return x


ember.manual_seed(0)
mods = [nn.Linear(16, 32), nn.Tanh()] if r == 0 else [Dies(), nn.Linear(32, 4)]
stage = dist.PipelineStage(nn.Sequential(*mods))
rng = np.random.default_rng(0)
X = ember.tensor(rng.standard_normal((32, 16)).astype(np.float32))
Y = ember.tensor(rng.integers(0, 4, 32))
for step in range(3):
    stage.train_step(X if r == 0 else None, Y if r == 1 else None, nn.CrossEntropyLoss(), micro_batches=4,
                     schedule="1f1b")
print(f"rank {r} finished", flush=True)
dist.destroy_process_group()
