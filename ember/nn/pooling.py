"""Pooling layers (PI-3): `MaxPool2d` (pads with -inf; return_indices), `AvgPool2d` (pads with 0),
`AdaptiveAvgPool2d`, `AdaptiveMaxPool2d` (return_indices), `MaxUnpool2d`."""
from __future__ import annotations

from .. import api as E
from ..ops import lax
from . import functional as F
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxUnpool2d"]


class MaxPool2d(Module):
    """Max over kernel_size windows moved by stride (default: kernel_size); padding counts as -inf.

    With return_indices the forward returns (output, indices), the flat H * W position of each
    maximum (PyTorch's: the last NaN, else the first maximum in the window), for MaxUnpool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        if self.return_indices:
            return F.max_pool2d_with_indices(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                             self.ceil_mode)
        if F._pair(self.dilation) != (1, 1):
            return _dilated_max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                       self.ceil_mode)
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


def _dilated_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode):
    """Max-pool with a dilated window as an elementwise max over the window's strided taps.

    The reduce_window primitive's gradient does not support window dilation, and elementwise max
    does: each tap is a strided slice of the -inf-padded input (same geometry as F.max_pool2d)."""
    x, unbatched = F._batched(input, 2, "max_pool2d")
    k, s, p, d = F._pair(kernel_size), F._pair(stride), F._pair(padding), F._pair(dilation)
    pads = F._pool_geometry(x.shape[2:], k, s, p, d, ceil_mode)
    xp = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]), value=float("-inf"))
    oh = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    n, c = x.shape[:2]
    out = None
    for i in range(k[0]):
        for j in range(k[1]):
            a, b = i * d[0], j * d[1]
            tap = lax.slice(xp, (0, 0, a, b), (n, c, a + (oh - 1) * s[0] + 1, b + (ow - 1) * s[1] + 1),
                            (1, 1, s[0], s[1]))
            out = tap if out is None else lax.max(out, tap)
    return E.reshape(out, out.shape[1:]) if unbatched else out


class AvgPool2d(Module):
    """Mean over windows; padding counts as 0 (and in the divisor when count_include_pad)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (None in output_size keeps that input dim): F.adaptive_avg_pool2d."""
    return F.adaptive_avg_pool2d(input, output_size)


class AdaptiveAvgPool2d(Module):
    """Average-pool (N, C, H, W) to (N, C, *output_size) with PyTorch's window boundaries."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"



class AdaptiveMaxPool2d(Module):
    """Max-pool (N, C, H, W) to (N, C, *output_size) over PyTorch's adaptive windows; return_indices
    also returns the flat H * W index of each maximum."""

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class MaxUnpool2d(Module):
    """The partial inverse of MaxPool2d(return_indices=True): forward(input, indices, output_size=None)
    writes each value at its index and zeros elsewhere."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = F._pair(kernel_size)
        self.stride = F._pair(stride if stride is not None else kernel_size)
        self.padding = F._pair(padding)

    def forward(self, input, indices, output_size=None):
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
