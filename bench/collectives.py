"""All-reduce bandwidth: ember's ring vs MPI's MPI_Allreduce (DT-9, DT-10).

    ember launch -n 2 bench/collectives.py [--max-mb 256]

algbw = bytes / time; busbw = algbw * 2(p-1)/p (the bytes each link must carry for an all-reduce).
Sizes 1 KB .. 256 MB, float32; the two algorithms interleaved over rounds, median time reported.
"""
import argparse
import statistics
import time

import numpy as np

import ember
import ember.distributed as dist

ap = argparse.ArgumentParser()
ap.add_argument("--max-mb", type=float, default=256)
ap.add_argument("--rounds", type=int, default=5)
a = ap.parse_args()
dist.init_process_group()
n, r = dist.get_world_size(), dist.get_rank()
sizes, s = [], 1024
while s <= a.max_mb * (1 << 20):
    sizes.append(s)
    s *= 4
if r == 0:
    print(f"all_reduce float32, {n} ranks; busbw = algbw * 2(p-1)/p = algbw * {2 * (n - 1) / n:.2f}")
    print(f"{'bytes':>10} | {'ember ring ms':>13} {'algbw GB/s':>10} {'busbw GB/s':>10} | "
          f"{'MPI ms':>9} {'algbw GB/s':>10} {'busbw GB/s':>10} | ring/MPI")
for nbytes in sizes:
    t = ember.zeros(nbytes // 4)
    reps = max(1, min(200, int(2e7 // nbytes)))
    times = {"ring": [], "mpi": []}
    for _ in range(a.rounds):
        for algo in ("ring", "mpi"):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(reps):
                dist.all_reduce(t, algorithm=algo)
            times[algo].append((time.perf_counter() - t0) / reps)
    tm = {k: np.array([statistics.median(v)]) for k, v in times.items()}
    for k in tm:  # the slowest rank's time
        dist.all_reduce(ember.tensor(tm[k]), op="max", algorithm="mpi")
    if r == 0:
        row = []
        for k in ("ring", "mpi"):
            sec = float(tm[k][0])
            alg = nbytes / sec / 1e9
            row.append((sec * 1e3, alg, alg * 2 * (n - 1) / n))
        print(f"{nbytes:>10} | {row[0][0]:>13.3f} {row[0][1]:>10.2f} {row[0][2]:>10.2f} | "
              f"{row[1][0]:>9.3f} {row[1][1]:>10.2f} {row[1][2]:>10.2f} | {row[1][0] / row[0][0]:.2f}x",
              flush=True)
    del t
dist.destroy_process_group()
