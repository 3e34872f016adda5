"""Chapter 7 (data processing): a pipeline with map, filter, shuffle buffer, batching and
prefetch, per-stage statistics, and a DataLoader with worker processes.

    python3 examples/ch07_data_pipeline.py
"""
import numpy as np

import ember
from ember.data import DataLoader, Dataset, Pipeline


class Squares(Dataset):
    """Item i is (i, i * i) as arrays."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return np.float32(i), np.float32(i * i)


def main() -> None:
    p = (Pipeline.range(100).filter(lambda i: i % 2 == 0).map(lambda i: ember.full((2,), float(i)))
         .shuffle(16, seed=0).batch(8).prefetch(2))
    batches = list(p)
    print(f"{len(batches)} batches of {tuple(batches[0].shape)}; first row {batches[0][0].tolist()}")
    print(p.stats())
    loader = DataLoader(Squares(), batch_size=16, num_workers=2)
    for x, y in loader:
        assert bool((x * x == y).all())
    print("DataLoader with 2 workers:", len(loader), "batches, in order")


if __name__ == "__main__":
    main()
