"""Deployment: quantization, pruning, distillation and inference rewrites (book chapter 8)."""
from . import quant  # noqa: F401
from . import correction, observers, qat  # noqa: F401
from . import compress, distill, prune  # noqa: F401
from . import binary, protect, rewrites  # noqa: F401
from . import int8  # noqa: F401
