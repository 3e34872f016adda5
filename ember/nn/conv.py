"""Convolution layers (PI-3): `Conv1d`, `Conv2d`, `Conv3d` with weights (out, in / groups, *kernel), and
`ConvTranspose1d`, `ConvTranspose2d`, `ConvTranspose3d` with weights (in, out / groups, *kernel), as PyTorch."""
from __future__ import annotations


from .. import api as E
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


def _ntuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _pad_nonzero(x, pads, mode: str):
    """Pad the trailing len(pads) dims of x by (lo, hi) each with 'reflect', 'replicate' or 'circular'."""
    nd = len(pads)
    for i, (lo, hi) in enumerate(pads):
        d = x.ndim - nd + i
        n = x.shape[d]
        parts = []
        if mode == "circular":
            if lo > n or hi > n:
                raise ValueError("Padding value causes wrapping around more than once.")
            left, right = E.narrow(x, d, n - lo, lo), E.narrow(x, d, 0, hi)
        elif mode == "reflect":
            if lo >= n or hi >= n:
                raise ValueError(f"Padding size should be less than the corresponding input dimension, "
                                 f"but got: padding ({lo}, {hi}) at dimension {d} of input {x.shape}")
            left = E.flip(E.narrow(x, d, 1, lo), (d,))
            right = E.flip(E.narrow(x, d, n - 1 - hi, hi), (d,))
        elif mode == "replicate":
            shape_l = list(x.shape)
            shape_l[d] = lo
            shape_r = list(x.shape)
            shape_r[d] = hi
            left = E.expand(E.narrow(x, d, 0, 1), tuple(shape_l))
            right = E.expand(E.narrow(x, d, n - 1, 1), tuple(shape_r))
        else:
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {mode!r}")
        if lo:
            parts.append(left)
        parts.append(x)
        if hi:
            parts.append(right)
        if len(parts) > 1:
            x = E.cat(parts, d)
    return x


class _ConvNd(Module):
    _nd = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0, groups, bias,
                    padding_mode, device, dtype)

    def _setup(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed, output_padding,
               groups, bias, padding_mode, device, dtype) -> None:
        """PyTorch's _ConvNd.__init__: check the arguments, then create and initialise weight and bias."""
        nd = self._nd
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        stride = _ntuple(stride, nd)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = _ntuple(padding, nd)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be one of ['zeros', 'reflect', 'replicate', 'circular'], "
                             f"but got padding_mode='{padding_mode}'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, nd)
        self.stride = stride
        self.padding = padding
        self.dilation = _ntuple(dilation, nd)
        self.transposed = transposed
        self.output_padding = _ntuple(output_padding, nd)
        self.groups = groups
        self.padding_mode = padding_mode
        shape = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        self.weight = Parameter(E.empty(shape + self.kernel_size, dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(E.empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """kaiming_uniform_(a=sqrt(5)) for the weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias."""
        init.default_layer_init_(self.weight, self.bias)

    def _explicit_pads(self) -> list:
        if self.padding == "valid":
            return [(0, 0)] * self._nd
        if self.padding == "same":
            out = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))
            return out
        return [(p, p) for p in self.padding]

    def _conv_forward(self, input, weight, bias):
        fn = (F.conv1d, F.conv2d, F.conv3d)[self._nd - 1]
        if self.padding_mode != "zeros":
            nd = self._nd
            x = input if input.ndim == nd + 2 else E.unsqueeze(input, 0)
            x = _pad_nonzero(x, self._explicit_pads(), self.padding_mode)
            out = fn(x, weight, bias, self.stride, 0, self.dilation, self.groups)
            return out if input.ndim == nd + 2 else E.squeeze(out, 0)
        return fn(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution over (N, C_in, L) or (C_in, L); weight (C_out, C_in / groups, k)."""

    _nd = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in / groups, kh, kw) (PI-3)."""

    _nd = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C_in, D, H, W) or (C_in, D, H, W); weight (C_out, C_in / groups, kd, kh, kw)."""

    _nd = 3


class _ConvTransposeNd(_ConvNd):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None,
                 dtype=None):
        Module.__init__(self)
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__} does not support string padding, got {padding!r}")
        self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation, True, output_padding, groups,
                    bias, padding_mode, device, dtype)

    def _output_padding(self, input, output_size) -> tuple:
        """The output_padding that gives `output_size` (PyTorch's ConvTranspose rule), else self.output_padding."""
        if output_size is None:
            return self.output_padding
        nd = self._nd
        want = tuple(int(v) for v in output_size)
        if len(want) in (nd + 1, nd + 2):
            want = want[-nd:]
        if len(want) != nd:
            raise ValueError(f"ConvTranspose{nd}D: for {input.ndim}D input, output_size must have {nd} or "
                             f"{nd + 2} elements (got {len(output_size)})")
        spatial = input.shape[input.ndim - nd:]
        lo = [(n - 1) * s - 2 * p + d * (k - 1) + 1
              for n, s, p, d, k in zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]
        hi = [m + s - 1 for m, s in zip(lo, self.stride)]
        for w, a, b in zip(want, lo, hi):
            if not a <= w <= b:
                raise ValueError(f"requested an output size of {want}, but valid sizes range from {tuple(lo)} to "
                                 f"{tuple(hi)} (for an input of {tuple(spatial)})")
        return tuple(w - a for w, a in zip(want, lo))

    def forward(self, input, output_size=None):
        nd = self._nd
        if input.ndim not in (nd + 1, nd + 2):
            raise ValueError(f"{type(self).__name__}: expected a {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                             f"got shape {input.shape}")
        cdim = input.ndim - nd - 1
        if input.shape[cdim] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: input of shape {input.shape} has {input.shape[cdim]} channels "
                             f"(dim {cdim}), but the layer was built for in_channels={self.in_channels}")
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        return fn(input, self.weight, self.bias, self.stride, self.padding, self._output_padding(input, output_size),
                  self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-D convolution over (N, C_in, L); weight (C_in, C_out / groups, k)."""

    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-D convolution over (N, C_in, H, W); weight (C_in, C_out / groups, kh, kw) (PI-3)."""

    _nd = 2


class ConvTranspose3d(_ConvTransposeNd):
    """Transposed 3-D convolution over (N, C_in, D, H, W); weight (C_in, C_out / groups, kd, kh, kw)."""

    _nd = 3
