"""The per-kernel table of a step's profile: time, share, GFLOP/s and GB/s per kernel."""
from __future__ import annotations


def kernel_table(rows: list) -> str:
    """The per-kernel table of `StepExecutable.profile`: time, GFLOP/s and GB/s."""
    total = sum(r[1] for r in rows) or 1.0
    out = [f"{'unit':>4} {'ms':>9} {'share':>6} {'GFLOP/s':>8} {'GB/s':>7}  kernel"]
    for u, (label, t, flops, nbytes) in enumerate(rows):
        gf = flops / t / 1e9 if t > 0 else 0.0
        gb = nbytes / t / 1e9 if t > 0 else 0.0
        out.append(f"{u:>4} {t * 1e3:>9.4f} {t / total:>6.1%} {gf:>8.2f} {gb:>7.2f}  {label[:90]}")
    out.append(f"{'':>4} {total * 1e3:>9.4f}  total")
    return "\n".join(out)
