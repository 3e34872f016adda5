"""Under mpiexec -n 2: tensor-parallel layers (DT-2) against the unsharded ones. argv: out_prefix.

(a) ColumnParallelLinear(1024 -> 4096), gathered output: outputs, input and parameter gradients;
(b) Megatron's MLP block, column (no gather) then row parallel: outputs and gradients, and the
    all-reduce calls of one forward and of one backward. Rank r writes out_prefix.r.npz."""
import sys

import numpy as np

import ember
import ember.distributed as dist
from ember import nn

out = sys.argv[1]
g = dist.init_process_group()
n, r = g.size, g.rank
res = {}
rng = np.random.default_rng(0)
x0 = rng.standard_normal((8, 1024)).astype(np.float32)
gy = rng.standard_normal((8, 4096)).astype(np.float32)

ember.manual_seed(0)
full = nn.Linear(1024, 4096)
col = dist.ColumnParallelLinear.from_linear(full)
x = ember.tensor(x0, requires_grad=True)
y = full(x)
(y * ember.tensor(gy)).sum().backward()
xs = ember.tensor(x0, requires_grad=True)
ys = col(xs)
(ys * ember.tensor(gy)).sum().backward()
k = 4096 // n
res.update(y=y.detach().numpy(), ys=ys.detach().numpy(), gx=x.grad.numpy(), gxs=xs.grad.numpy(),
           gw=full.weight.grad.numpy()[r * k:(r + 1) * k], gws=col.weight.grad.numpy(),
           gb=full.bias.grad.numpy()[r * k:(r + 1) * k], gbs=col.bias.grad.numpy(),
           bytes_full=sum(p.numel() * 4 for p in full.parameters()), bytes_col=sum(p.numel() * 4 for p in col.parameters()))

ember.manual_seed(1)
fc1, fc2 = nn.Linear(64, 256), nn.Linear(256, 64)
block = nn.Sequential(dist.ColumnParallelLinear.from_linear(fc1, gather_output=False), nn.GELU(),
                      dist.RowParallelLinear.from_linear(fc2))
x1 = rng.standard_normal((5, 64)).astype(np.float32)
a = ember.tensor(x1, requires_grad=True)
ref = fc2(nn.functional.gelu(fc1(a)))
(ref * ref).sum().backward()
b = ember.tensor(x1, requires_grad=True)
c0 = g.stats["calls:all_reduce:ring"]
o = block(b)
c1 = g.stats["calls:all_reduce:ring"]
(o * o).sum().backward()
c2 = g.stats["calls:all_reduce:ring"]
k2 = 256 // n
res.update(mlp=ref.detach().numpy(), mlps=o.detach().numpy(), mgx=a.grad.numpy(), mgxs=b.grad.numpy(),
           mg1=fc1.weight.grad.numpy()[r * k2:(r + 1) * k2], mg1s=block[0].weight.grad.numpy(),
           mg2=fc2.weight.grad.numpy()[:, r * k2:(r + 1) * k2], mg2s=block[2].weight.grad.numpy(),
           fwd_calls=c1 - c0, bwd_calls=c2 - c1)
np.savez(f"{out}.{r}.npz", **res)
dist.destroy_process_group()
