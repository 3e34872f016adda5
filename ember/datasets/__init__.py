"""Built-in datasets (layer 5): MNIST and Fashion-MNIST read from their IDX files.

    from ember.datasets import FashionMNIST
    from ember.data import DataLoader, TensorDataset
    train = FashionMNIST(train=True)                    # finds the files, see ember.datasets.mnist
    loader = DataLoader(TensorDataset(*train.as_tensors()), batch_size=128, shuffle=True)
"""
from .mnist import MNIST, FashionMNIST
from .synthetic import spiral
from .utils import DatasetError, download_file, read_idx

__all__ = ["MNIST", "FashionMNIST", "DatasetError", "read_idx", "download_file", "spiral"]
