"""Layer 5: neural-network building blocks. `ember.nn.functional` holds the composite layers."""
from . import functional  # noqa: F401
