"""Pooling layers (PI-3), 1-, 2- and 3-D: `MaxPool{1,2,3}d` (pads with -inf; return_indices),
`AvgPool{1,2,3}d` (pads with 0), `AdaptiveAvgPool{1,2,3}d`, `AdaptiveMaxPool{1,2,3}d` (return_indices),
`MaxUnpool{1,2,3}d` and `LPPool{1,2,3}d`.

Each family is one base class parametrised by its number of spatial dims (`_nd`), calling the
functional form `F.<name>{_nd}d`; those are one N-d implementation each (functional_resample.py).
"""
from __future__ import annotations

from . import functional as F
from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
           "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "LPPool1d", "LPPool2d", "LPPool3d"]


def _fn(name: str, nd: int):
    return getattr(F, f"{name}{nd}d")


class _MaxPoolNd(Module):
    """Max over kernel_size windows moved by stride (default: kernel_size); padding counts as -inf.

    With return_indices the forward returns (output, indices), the flat per-channel spatial position
    of each maximum (PyTorch's: the last NaN, else the first maximum in the window), for MaxUnpool."""

    _nd = 2

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
        return _fn("max_pool", self._nd)(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                         ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max-pool (N, C, L) or (C, L)."""
    _nd = 1


class MaxPool2d(_MaxPoolNd):
    """Max-pool (N, C, H, W) or (C, H, W)."""
    _nd = 2


class MaxPool3d(_MaxPoolNd):
    """Max-pool (N, C, D, H, W) or (C, D, H, W)."""
    _nd = 3


class _AvgPoolNd(Module):
    """Mean over windows; padding counts as 0 (and in the divisor when count_include_pad)."""

    _nd = 2

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
        return _fn("avg_pool", self._nd)(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                         self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Average-pool (N, C, L) or (C, L); no divisor_override (as PyTorch's)."""
    _nd = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True):
        super().__init__(F._pair(kernel_size, 1), F._pair(stride if stride is not None else kernel_size, 1),
                         F._pair(padding, 1), ceil_mode, count_include_pad)

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """Average-pool (N, C, H, W) or (C, H, W)."""
    _nd = 2


class AvgPool3d(_AvgPoolNd):
    """Average-pool (N, C, D, H, W) or (C, D, H, W)."""
    _nd = 3


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size (None in output_size keeps that input dim): F.adaptive_avg_pool2d."""
    return F.adaptive_avg_pool2d(input, output_size)


class _AdaptiveAvgPoolNd(Module):
    """Average-pool (N, C, *spatial) to (N, C, *output_size) with PyTorch's window boundaries."""

    _nd = 2

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return _fn("adaptive_avg_pool", self._nd)(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    _nd = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    _nd = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    _nd = 3


class _AdaptiveMaxPoolNd(Module):
    """Max-pool (N, C, *spatial) to (N, C, *output_size) over PyTorch's adaptive windows; return_indices
    also returns the flat per-channel spatial index of each maximum."""

    _nd = 2

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, input):
        return _fn("adaptive_max_pool", self._nd)(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    _nd = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    _nd = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    _nd = 3


class _MaxUnpoolNd(Module):
    """The partial inverse of MaxPool (return_indices=True): forward(input, indices, output_size=None)
    writes each value at its index and zeros elsewhere."""

    _nd = 2

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = F._pair(kernel_size, self._nd)
        self.stride = F._pair(stride if stride is not None else kernel_size, self._nd)
        self.padding = F._pair(padding, self._nd)

    def forward(self, input, indices, output_size=None):
        return _fn("max_unpool", self._nd)(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    _nd = 1


class MaxUnpool2d(_MaxUnpoolNd):
    _nd = 2


class MaxUnpool3d(_MaxUnpoolNd):
    _nd = 3


class _LPPoolNd(Module):
    """Power-average pooling: (sum over each window of x ** norm_type) ** (1 / norm_type)."""

    _nd = 2

    def __init__(self, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False):
        super().__init__()
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.stride = stride
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return _fn("lp_pool", self._nd)(input, float(self.norm_type), self.kernel_size, self.stride,
                                        self.ceil_mode)

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPoolNd):
    _nd = 1


class LPPool2d(_LPPoolNd):
    _nd = 2


class LPPool3d(_LPPoolNd):
    _nd = 3
