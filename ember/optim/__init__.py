"""Layer 5: optimizers, learning-rate schedulers and gradient clipping (PyTorch's `torch.optim`).

Everything `step()` touches is a tensor updated in place (learning rates and step counts are 0-d
tensors, state exists from construction), so a training step including the update can be traced;
see `optimizer.py` and docs/optim.md.
"""
from . import lr_scheduler  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .clip import clip_grad_norm_, clip_grad_value_, get_total_norm  # noqa: F401
from .lr_scheduler import (CosineAnnealingLR, LambdaLR, LinearLR, LRScheduler, StepLR,  # noqa: F401
                           WarmupCosineLR)
from .optimizer import Optimizer, ParamGroup  # noqa: F401
from .sgd import SGD  # noqa: F401

__all__ = ["Optimizer", "ParamGroup", "SGD", "Adam", "AdamW", "lr_scheduler", "LRScheduler", "StepLR",
           "LinearLR", "CosineAnnealingLR", "LambdaLR", "WarmupCosineLR", "clip_grad_norm_",
           "clip_grad_value_", "get_total_norm"]
