"""FFT and complex-op reference cases, shared by tools/make_fft_fixtures.py (torch) and
tests/test_fft.py (ember): `fn(M, *inputs)` spells the call the same way for M = torch and
M = ember. Inputs are numpy arrays (real or complex, float32/complex64 or float64/complex128).
Imports numpy only."""
from __future__ import annotations

import numpy as np

R = np.random.default_rng(20261203)


def real(*shape, dtype=np.float64):
    return R.standard_normal(shape).astype(dtype)


def cplx(*shape, dtype=np.complex128):
    return (R.standard_normal(shape) + 1j * R.standard_normal(shape)).astype(dtype)


def special(dtype=np.complex128):
    z = cplx(2, 6, dtype=dtype)
    z[0, 1] = np.inf
    z[1, 3] = complex(np.nan, 1.0)
    return z


# name, fn(M, *inputs), inputs, whether to compare gradients
CASES = [
    # 1-D transforms along the last dim, n crops and pads, every norm
    ("fft_real_in", lambda M, x: M.fft.fft(x), [real(3, 8)], True),
    ("fft_complex", lambda M, x: M.fft.fft(x), [cplx(2, 7)], True),
    ("fft_n_crop_ortho", lambda M, x: M.fft.fft(x, n=5, norm="ortho"), [cplx(3, 8)], True),
    ("fft_n_pad_forward", lambda M, x: M.fft.fft(x, n=11, dim=0, norm="forward"), [cplx(6, 3)], True),
    ("fft_f32", lambda M, x: M.fft.fft(x), [cplx(4, 16, dtype=np.complex64)], True),
    ("ifft", lambda M, x: M.fft.ifft(x, norm="backward"), [cplx(3, 6)], True),
    ("ifft_n_ortho", lambda M, x: M.fft.ifft(x, n=4, norm="ortho"), [cplx(2, 6)], True),
    ("rfft_even", lambda M, x: M.fft.rfft(x), [real(3, 8)], True),
    ("rfft_odd_n", lambda M, x: M.fft.rfft(x, n=9, norm="ortho"), [real(2, 7)], True),
    ("rfft_f32_dim0", lambda M, x: M.fft.rfft(x, dim=0), [real(10, 3, dtype=np.float32)], True),
    ("irfft_even", lambda M, x: M.fft.irfft(x), [cplx(3, 5)], True),
    ("irfft_odd_n", lambda M, x: M.fft.irfft(x, n=7, norm="forward"), [cplx(2, 4)], True),
    ("irfft_n_crop", lambda M, x: M.fft.irfft(x, n=4, norm="ortho"), [cplx(2, 6)], True),
    ("irfft_real_in", lambda M, x: M.fft.irfft(x, n=6), [real(2, 4)], True),
    ("hfft", lambda M, x: M.fft.hfft(x), [cplx(2, 5)], True),
    ("hfft_n_ortho", lambda M, x: M.fft.hfft(x, n=7, norm="ortho"), [cplx(3, 4)], True),
    ("ihfft", lambda M, x: M.fft.ihfft(x), [real(2, 8)], True),
    ("ihfft_forward", lambda M, x: M.fft.ihfft(x, n=5, norm="forward"), [real(3, 6)], True),
    # 2-D and N-D
    ("fft2", lambda M, x: M.fft.fft2(x), [cplx(2, 4, 6)], True),
    ("fft2_s_dims", lambda M, x: M.fft.fft2(x, s=(3, 5), dim=(0, 2), norm="ortho"), [cplx(4, 2, 6)], True),
    ("ifft2", lambda M, x: M.fft.ifft2(x), [cplx(5, 4)], True),
    ("rfft2", lambda M, x: M.fft.rfft2(x), [real(2, 6, 8)], True),
    ("irfft2", lambda M, x: M.fft.irfft2(x), [cplx(4, 5)], True),
    ("irfft2_s", lambda M, x: M.fft.irfft2(x, s=(3, 7), norm="ortho"), [cplx(2, 4, 4)], True),
    ("fftn_all", lambda M, x: M.fft.fftn(x), [cplx(3, 4, 5)], True),
    ("fftn_s", lambda M, x: M.fft.fftn(x, s=(2, 6)), [real(3, 4, 5)], True),
    ("ifftn_dim", lambda M, x: M.fft.ifftn(x, dim=(0, 2), norm="forward"), [cplx(3, 2, 4)], True),
    ("rfftn", lambda M, x: M.fft.rfftn(x), [real(4, 3, 6)], True),
    ("rfftn_dim_order", lambda M, x: M.fft.rfftn(x, dim=(2, 0)), [real(4, 3, 6)], True),
    ("irfftn", lambda M, x: M.fft.irfftn(x), [cplx(3, 4, 4)], True),
    ("irfftn_s_odd", lambda M, x: M.fft.irfftn(x, s=(4, 5), dim=(0, 1), norm="ortho"), [cplx(3, 4, 2)], True),
    ("hfft2", lambda M, x: M.fft.hfft2(x), [cplx(4, 3)], True),
    ("ihfft2", lambda M, x: M.fft.ihfft2(x), [real(4, 6)], True),
    ("hfftn", lambda M, x: M.fft.hfftn(x, s=(3, 6)), [cplx(2, 3, 4)], True),
    ("ihfftn", lambda M, x: M.fft.ihfftn(x, norm="ortho"), [real(3, 4, 5)], True),
    # views, size-1 dims, special values (empty batch dims: torch 2.13's MKL FFT raises on them, so
    # tests/test_fft.py checks ember's empty results against numpy instead)
    ("fft_transposed", lambda M, x: M.fft.fft(x.mT), [cplx(6, 3)], True),
    ("rfft_strided", lambda M, x: M.fft.rfft(x[:, ::2]), [real(3, 12)], True),
    ("fft_broadcast_view", lambda M, x: M.fft.fft(x.expand(3, 5)), [cplx(1, 5)], True),
    ("fft_len1", lambda M, x: M.fft.fft(x), [cplx(3, 1)], True),
    ("rfft_len1", lambda M, x: M.fft.rfft(x), [real(1, 1)], True),
    ("irfft_len1_n1", lambda M, x: M.fft.irfft(x, n=1), [cplx(2, 1)], True),
    ("fft_special", lambda M, x: M.fft.fft(x), [special()], False),
    ("ifft_special", lambda M, x: M.fft.ifft(x), [special()], False),
    ("rfft_special", lambda M, x: M.fft.rfft(x), [np.array([[1.0, np.inf, 0.0, 2.0], [np.nan, 1, 2, 3]])], False),
    # shifts and frequencies
    ("fftshift", lambda M, x: M.fft.fftshift(x), [real(3, 5)], True),
    ("fftshift_dim", lambda M, x: M.fft.fftshift(x, dim=1), [cplx(4, 6)], True),
    ("ifftshift", lambda M, x: M.fft.ifftshift(x, dim=(0, 1)), [real(5, 4)], True),
    ("fftfreq", lambda M: M.fft.fftfreq(7, 0.5, dtype=M.float64), [], False),
    ("rfftfreq", lambda M: M.fft.rfftfreq(8, 0.25, dtype=M.float64), [], False),
    # complex arithmetic and parts
    ("cmul", lambda M, a, b: a * b, [cplx(3, 4), cplx(3, 4)], True),
    ("cmul_real", lambda M, a, b: a * b, [cplx(3, 4), real(4)], True),
    ("cdiv", lambda M, a, b: a / b, [cplx(3, 4), cplx(3, 4) + 2], True),
    ("cadd_sub", lambda M, a, b: (a + b) - 2.5 * a, [cplx(2, 3), real(2, 3)], True),
    ("cexp", lambda M, z: M.exp(z), [cplx(3, 3)], True),
    ("cabs", lambda M, z: M.abs(z), [cplx(4, 4)], True),
    ("cabs_zero", lambda M, z: M.abs(z), [np.array([0j, 3 + 4j, -1j])], True),
    ("angle", lambda M, z: M.angle(z), [cplx(3, 4)], True),
    ("real_imag", lambda M, z: M.real(z) * 2 + M.imag(z) * 3, [cplx(3, 4)], True),
    ("conj", lambda M, z: M.conj(z) * z.imag, [cplx(2, 5)], True),
    ("view_as_real", lambda M, z: M.view_as_real(z), [cplx(2, 3)], True),
    ("view_as_complex", lambda M, x: M.view_as_complex(x), [real(3, 2)], True),
    ("polar", lambda M, r, t: M.polar(r, t), [np.abs(real(5)) + 0.1, real(5)], True),
    ("complex_ctor", lambda M, a, b: M.complex(a, b), [real(2, 3), real(3)], True),
    ("csum_mean", lambda M, z: z.sum(0) + z.mean(1, keepdim=True), [cplx(3, 3)], True),
    ("promote_c64_f64", lambda M, a, b: a + b, [cplx(2, 2, dtype=np.complex64), real(2, 2)], True),
    ("spectral_filter", lambda M, x, h: M.fft.irfft(M.fft.rfft(x) * M.fft.rfft(h, n=x.shape[-1]),
                                                    n=x.shape[-1]), [real(2, 16), real(5)], True),
]
