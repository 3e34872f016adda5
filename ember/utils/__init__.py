"""Training utilities that sit beside nn and optim: activation checkpointing (`checkpoint`)."""
from .checkpoint import checkpoint, checkpoint_sequential

__all__ = ["checkpoint", "checkpoint_sequential"]
