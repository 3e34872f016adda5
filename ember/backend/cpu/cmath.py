"""ember's own vectorisable float32 math, as a C prelude that every CPU kernel includes.

The C library's expf/logf/tanhf/erff are scalar calls that stop GCC vectorising a loop, and
`-ffast-math` (which would swap in libmvec) flushes subnormals for the whole process. These
functions are branch-free (selects, not jumps), use only +, -, *, /, comparisons and bit casts,
so GCC vectorises the loops that call them. Measured against numpy float64 (tests/test_codegen.py,
dense sweeps plus special values), maximum relative error for normal results
(bound tested / measured):

    em_expf      bound 2e-7, measured 7.7e-8 (0.95 ulp): Cephes polynomial, Cody-Waite reduction;
                 overflow -> inf, underflow -> 0, subnormal results within one subnormal step
    em_logf      bound 2e-7, measured 7.6e-8 (0.74 ulp): Cephes polynomial on the mantissa;
                 subnormal inputs rescaled; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf
    em_tanhf     bound 4e-7, measured 3.3e-7 (5.5 ulp, near |x| = 4): a rational x*P(x^2)/Q(x^2)
                 (degrees 6 and 3, fitted by ember to tanh(x)/x on [0, 7.905]), clamped beyond,
                 exactly +-1 from |x| = 9.011 on (where float32 tanh rounds to 1);
                 one division and no exp, 2.3x faster than 1 - 2/(exp(2|x|) + 1); tanh(-0) = -0
    em_erff      bound 3e-7, measured 1.6e-7 (2.3 ulp): x * q(x^2) for |x| < 0.921875,
                 else 1 - exp(p(|x|)) with p fitted to log(erfc) on [0.92, 4]
    em_sigmoidf  bound 3e-7, measured 1.8e-7 (2.2 ulp): stable on both tails (exp of -|x| only)

NaN propagates through all of them. The float64 versions call libm (scalar; correct to ~1 ulp), as
do sin, cos, log1p, expm1 and atan2 in both widths. Float floor division and remainder follow
numpy's npy_divmod and PyTorch's remainder bit for bit.
Kernels are compiled with -ffp-contract=off, so no FMA changes these numbers.
"""
from __future__ import annotations

PRELUDE = r"""
#include <stdint.h>
#include <math.h>

static inline uint32_t em_f2u(float x) { union { float f; uint32_t u; } v; v.f = x; return v.u; }
static inline float em_u2f(uint32_t x) { union { float f; uint32_t u; } v; v.u = x; return v.f; }

static inline float em_expf(float x)
{
    const float magic = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float t = xc * 1.44269504088896341f + magic;
    int32_t n = (int32_t)(em_f2u(t) - em_f2u(magic));
    float k = t - magic;
    float r = xc - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    /* 2^n in two factors so that n in [-150, 128] never leaves the normal exponent range */
    int32_t n1 = n >> 1;
    int32_t n2 = n - n1;
    float s1 = em_u2f((uint32_t)(n1 + 127) << 23);
    float s2 = em_u2f((uint32_t)(n2 + 127) << 23);
    float y = (p * s1) * s2;
    return x != x ? x : y;
}

static inline float em_logf(float x)
{
    int sub = x < 1.17549435e-38f;
    float xs = sub ? x * 8388608.0f : x;  /* subnormals: scale by 2^23 */
    uint32_t b = em_f2u(xs);
    float e = (float)((int32_t)((b >> 23) & 0xffu) - 126) - (sub ? 23.0f : 0.0f);
    float m = em_u2f((b & 0x007fffffu) | 0x3f000000u);  /* mantissa in [0.5, 1) */
    int lo = m < 0.707106781186547524f;
    e = lo ? e - 1.0f : e;
    float f = lo ? m + m - 1.0f : m - 1.0f;
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y = y + e * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = f + y;
    r = r + e * 0.693359375f;
    r = x == 0.0f ? -INFINITY : r;
    r = x < 0.0f ? NAN : r;
    r = x == INFINITY ? x : r;
    return x != x ? x : r;
}

static inline float em_tanhf(float x)
{
    /* x * P(x^2) / Q(x^2), fitted to tanh(x)/x on [0, c]; beyond c, tanh rounds to +-1 */
    const float c = 7.90531110763549805f;
    float xc = x > c ? c : (x < -c ? -c : x);  /* NaN passes through */
    float z = xc * xc;
    float p = -1.2464514012947014e-13f;
    p = p * z + 6.66121463543945e-11f;
    p = p * z - 2.285038291915953e-08f;
    p = p * z + 1.1762844223994762e-05f;
    p = p * z + 3.1603584066033363e-03f;
    p = p * z + 1.3134068250656128e-01f;
    p = p * z + 1.0f;
    float q = 2.6292685652151704e-04f;
    q = q * z + 2.4718379601836205e-02f;
    q = q * z + 4.6467399597167969e-01f;
    q = q * z + 1.0f;
    /* from 9.011 on, tanh rounds to exactly +-1 in float32 (below, the clamped fit is within 4 ulp) */
    const float r = (xc * p) / q;
    return fabsf(x) >= 9.0109997f ? (x > 0 ? 1.0f : -1.0f) : r;
}

static inline float em_erff(float x)
{
    float a = fabsf(x);
    float s = x * x;
    float q = -5.986210890114307e-4f;
    q = q * s + 4.992183297872543e-3f;
    q = q * s - 2.6765864342451096e-2f;
    q = q * s + 1.128179281949997e-1f;
    q = q * s - 3.7612491846084595e-1f;
    q = q * s + 1.1283791065216064f;
    float small = x * q;
    float t = a > 4.0f ? 4.0f : a;  /* erf rounds to 1 beyond ~3.92 */
    float p = 1.613085714780027e-06f;
    p = p * t - 4.5570875954581425e-05f;
    p = p * t + 5.925991572439671e-04f;
    p = p * t - 4.739406052976847e-03f;
    p = p * t + 2.6362348347902298e-02f;
    p = p * t - 1.0997398942708969e-01f;
    p = p * t - 6.319416761398315e-01f;
    p = p * t - 1.1301639080047607f;
    p = p * t + 3.0253425939008594e-04f;
    float big = copysignf(1.0f - em_expf(p), x);  /* p ~ log(erfc(t)) */
    return a < 0.921875f ? small : big;
}

static inline float em_sigmoidf(float x)
{
    float e = em_expf(-fabsf(x));
    float d = 1.0f + e;
    return x >= 0.0f ? 1.0f / d : e / d;
}

static inline double em_exp(double x) { return exp(x); }
static inline double em_log(double x) { return log(x); }
static inline double em_tanh(double x) { return tanh(x); }
static inline double em_erf(double x) { return erf(x); }
static inline double em_sigmoid(double x)
{
    double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* numpy's float floor_divide (npy_divmod): fmod, then the quotient snapped to an integer */
#define EM_FLOORDIV(name, T, S)                                                 \
static inline T name(T a, T b)                                                  \
{                                                                               \
    if (!b) return a / b;                                                       \
    const T mod = fmod##S(a, b);                                                \
    T div = (a - mod) / b;                                                      \
    if (mod && ((b < 0) != (mod < 0))) div -= 1;                                \
    if (!div) return copysign##S(0, a / b);                                     \
    T fl = floor##S(div);                                                       \
    return div - fl > (T)0.5 ? fl + 1 : fl;                                     \
}
EM_FLOORDIV(em_floordivf, float, f)
EM_FLOORDIV(em_floordiv, double, )

/* PyTorch's float remainder: fmod moved into the divisor's sign */
static inline float em_modf(float a, float b)
{ const float m = fmodf(a, b); return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m; }
static inline double em_mod(double a, double b)
{ const double m = fmod(a, b); return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m; }
"""

#: half precision, added to the prelude of a step holding float16 or bfloat16 values (the C of
#: every other step is unchanged). Both types are their bits in a uint16_t, converted by integer
#: and float operations written as masks, which GCC vectorises (C's _Float16 conversions, and
#: branches, it does not):
#: - bfloat16 widens by a shift and rounds to nearest even with NaN kept NaN (0x7fc0 and the
#:   sign), as ml_dtypes;
#: - float16 is numpy's own conversions (npy_halfbits_to_floatbits, npy_floatbits_to_halfbits):
#:   exact widening, subnormals renormalised by a float subtraction; round to nearest even, with
#:   a subnormal result rounded by adding 0.5 (F. Giesen's method); a NaN keeps its sign and the
#:   top of its payload (made non-zero), a signalling one stays signalling;
#: - float64 and integers round to float first, then to 16 bits, as PyTorch does (numpy and
#:   some ml_dtypes versions round float64 once; ember's numpy kernels go through float too)
HALF_PRELUDE = r"""
static inline float em_bf2f(uint16_t b) { return em_u2f((uint32_t)b << 16); }
static inline uint16_t em_f2bf(float f)
{
    const uint32_t u = em_f2u(f);
    const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) & 0x8000u) | 0x7fc0u : r);  /* NaN */
}
static inline float em_h2f(uint16_t h)
{
    const uint32_t o = (uint32_t)(h & 0x7fffu) << 13, e = o & 0x0f800000u;
    const uint32_t big = 0u - (uint32_t)(e == 0x0f800000u), zero = 0u - (uint32_t)(e == 0);  /* masks */
    const uint32_t n = o + 0x38000000u + (big & 0x38000000u);  /* rebiased; inf/NaN to exponent 255 */
    const uint32_t sub = em_f2u(em_u2f(o + 0x38800000u) - 0x1p-14f);  /* zero or subnormal, renormalised */
    return em_u2f((n & ~zero) | (sub & zero) | (uint32_t)(h & 0x8000u) << 16);
}
static inline uint16_t em_f2h(float f)
{
    const uint32_t u = em_f2u(f), a = u & 0x7fffffffu, m = (a >> 13) & 0x3ffu;
    const uint32_t nrm = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;  /* rebiased, rounded to even */
    const uint32_t sub = em_f2u(em_u2f(a) + 0.5f) - 0x3f000000u;  /* below 2^-14: the addition rounds */
    const uint32_t is_sub = 0u - (uint32_t)(a < 0x38800000u), is_big = 0u - (uint32_t)(a >= 0x47800000u);
    const uint32_t is_nan = 0u - (uint32_t)(a > 0x7f800000u);
    uint32_t r = (nrm & ~is_sub) | (sub & is_sub);
    r = (r & ~is_big) | (0x7c00u & is_big);
    r = (r & ~is_nan) | ((0x7c00u | m | (uint32_t)(m == 0)) & is_nan);
    return (uint16_t)(r | ((u >> 16) & 0x8000u));
}
/* bfloat16 -> integer as ml_dtypes casts: truncated, 0 where that lies outside [lo, hi) */
static inline int64_t em_bf2i(float f, double lo, double hi)
{ const double t = (double)truncf(f); return (t >= lo && t < hi) ? (int64_t)t : 0; }
"""

#: names that make a step's C need HALF_PRELUDE
HALF_NAMES = ("em_bf2f", "em_f2bf", "em_h2f", "em_f2h", "em_bf2i", "em_lut_")

#: functions with a float32 and a float64 version: name -> (float32 C name, float64 C name)
FUNCTIONS = {name: (f"em_{name}f", f"em_{name}") for name in ("exp", "log", "tanh", "erf", "sigmoid")}


def sweep_source() -> str:
    """C source exposing `void em_v<name>f(const float*, float*, int64_t)` loops, for tests."""
    loops = [f"void em_v{n}f(const float* x, float* y, int64_t n)\n"
             f"{{ for (int64_t i = 0; i < n; i++) y[i] = {f32}(x[i]); }}\n"
             for n, (f32, _) in FUNCTIONS.items()]
    return PRELUDE + "\n".join(loops)
