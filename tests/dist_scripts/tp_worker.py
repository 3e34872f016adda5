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

# (c) self-attention split by heads (8 heads, 4 a rank) against nn.MultiheadAttention
dist.init_process_group()
g = dist.group()
ember.manual_seed(2)
mha = nn.MultiheadAttention(64, 8, batch_first=True)
with ember.no_grad():  # non-zero biases, so their slicing is checked too
    mha.in_proj_bias.copy_(ember.randn(192) * 0.1)
    mha.out_proj.bias.copy_(ember.randn(64) * 0.1)
par = dist.ParallelSelfAttention.from_mha(mha)
x2 = np.random.default_rng(3).standard_normal((3, 10, 64)).astype(np.float32)
res2 = {}
for causal in (False, True):
    a = ember.tensor(x2, requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(10) if causal and hasattr(nn, "Transformer") else None
    ref = mha(a, a, a, need_weights=False, attn_mask=mask, is_causal=causal)[0] if causal else \
        mha(a, a, a, need_weights=False)[0]
    (ref * ref).sum().backward()
    b = ember.tensor(x2, requires_grad=True)
    c0 = g.stats["calls:all_reduce:ring"]
    o = par(b, is_causal=causal)
    c1 = g.stats["calls:all_reduce:ring"]
    (o * o).sum().backward()
    c2 = g.stats["calls:all_reduce:ring"]
    h, d = 4, 8
    rows = np.concatenate([np.arange(j * 64 + r * h * d, j * 64 + (r + 1) * h * d) for j in range(3)])
    res2.update({f"a{causal}": ref.detach().numpy(), f"as{causal}": o.detach().numpy(),
                 f"ax{causal}": a.grad.numpy(), f"axs{causal}": b.grad.numpy(),
                 f"aw{causal}": mha.in_proj_weight.grad.numpy()[rows], f"aws{causal}": par.in_weight.grad.numpy(),
                 f"ao{causal}": mha.out_proj.weight.grad.numpy()[:, r * h * d:(r + 1) * h * d],
                 f"aos{causal}": par.out_weight.grad.numpy(), f"afwd{causal}": c1 - c0, f"abwd{causal}": c2 - c1})
    mha.zero_grad()
    par.zero_grad()
np.savez(f"{out}.attn.{r}.npz", **res2)
dist.destroy_process_group()
