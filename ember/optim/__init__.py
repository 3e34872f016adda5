"""Layer 5: optimizers, learning-rate schedulers and gradient clipping (PyTorch's `torch.optim`).

Everything `step()` touches is a tensor updated in place (learning rates and step counts are 0-d
tensors, state exists from construction), so a training step including the update can be traced;
see `optimizer.py` and docs/optim.md.
"""
from . import lr_scheduler  # noqa: F401
from .adadelta import Adadelta  # noqa: F401
from .adagrad import Adagrad  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .clip import clip_grad_norm_, clip_grad_value_, get_total_norm  # noqa: F401
from .lamb import LAMB  # noqa: F401
from .lbfgs import LBFGS  # noqa: F401
from .lion import Lion  # noqa: F401
from .lr_scheduler import (CosineAnnealingLR, CosineAnnealingWarmRestarts, ExponentialLR,  # noqa: F401
                           LambdaLR, LinearLR, LRScheduler, MultiStepLR, OneCycleLR,
                           ReduceLROnPlateau, SequentialLR, StepLR, WarmupCosineLR)
from .optimizer import Optimizer, ParamGroup  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .sgd import SGD  # noqa: F401

__all__ = ["Optimizer", "ParamGroup", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "LBFGS",
           "LAMB", "Lion", "lr_scheduler", "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR",
           "LinearLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "OneCycleLR",
           "ReduceLROnPlateau", "SequentialLR", "LambdaLR", "WarmupCosineLR", "clip_grad_norm_",
           "clip_grad_value_", "get_total_norm"]
