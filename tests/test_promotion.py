"""ember's dtype promotion against PyTorch's (tests/fixtures/promotion.json), and float formats."""
import itertools
import json
import pathlib

import numpy as np
import pytest

import ember
from ember.ops import lax

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow to inf, on purpose

PROMO = json.loads((pathlib.Path(__file__).parent / "fixtures" / "promotion.json").read_text())
NAMES = PROMO["dtypes"]
SCALARS = {"bool": True, "int": 2, "float": 2.5}


def D(name):
    return getattr(ember, name if name != "bool" else "bool_")


def vec(name):
    return ember.ones(3, dtype=D(name))


def test_fixture_covers_every_user_dtype():
    from ember._core.dtypes import ALL
    assert NAMES == [d.name for d in ALL]
    assert len(PROMO["pairs"]) == len(NAMES) ** 2


@pytest.mark.parametrize("a,b", list(itertools.product(NAMES, NAMES)))
def test_promote_types_pairs(a, b):
    want = PROMO["pairs"][f"{a},{b}"]
    assert ember.promote_types(D(a), D(b)).name == want
    assert ember.result_type(vec(a), vec(b)).name == want
    assert ember.add(vec(a), vec(b)).dtype.name == want  # the eager op agrees with the table


@pytest.mark.parametrize("a,kind", list(itertools.product(NAMES, SCALARS)))
def test_result_type_tensor_and_python_scalar(a, kind):
    want = PROMO["scalar"][f"{a},{kind}"]
    s = SCALARS[kind]
    assert ember.result_type(vec(a), s).name == want
    assert ember.result_type(s, vec(a)).name == want
    assert ember.add(vec(a), s).dtype.name == want
    assert ember.add(s, vec(a)).dtype.name == want


@pytest.mark.parametrize("a", NAMES)
def test_true_division_and_float_unary_dtypes(a):
    assert (vec(a) / vec(a)).dtype.name == PROMO["true_div"][a]
    for op, want in PROMO["unary_float"][a].items():
        if isinstance(want, dict):  # torch raised: ember must raise too
            with pytest.raises(ember.DTypeError):
                getattr(ember, op)(vec(a))
        else:
            assert getattr(ember, op)(vec(a)).dtype.name == want


def _decode(bits: np.ndarray, name: str):
    """Reinterpret 16-bit patterns as float16/bfloat16 through ember's bitcast."""
    return lax.bitcast(ember.tensor(bits.astype(np.uint16).view(np.int16)), D(name))


def test_be6_float_formats():
    """BE-6: float16 and bfloat16 limits and encodings.

    float16's largest finite value is 65504 and its smallest subnormal 2**-24; bfloat16 keeps
    float32's exponent range, so 1e38 is finite in it (and would overflow float16); in both formats
    an all-ones exponent field means inf (zero mantissa) or NaN (non-zero mantissa), and only then.
    """
    f16, bf16 = ember.finfo(ember.float16), ember.finfo(ember.bfloat16)
    assert float(f16.max) == 65504.0
    assert float(f16.smallest_subnormal) == 2.0 ** -24
    t = ember.tensor([65504.0, 2.0 ** -24, 2.0 ** -25, 65520.0], dtype=ember.float16)
    assert t.tolist() == [65504.0, 2.0 ** -24, 0.0, float("inf")]  # 2**-25 ties to even (0); 65520 overflows
    b = ember.tensor([1e38, -1e38], dtype=ember.bfloat16)
    assert ember.isfinite(b).all().item()
    assert abs(b[0].item() - 1e38) / 1e38 < 2.0 ** -8
    assert float(bf16.max) > 3.3e38
    assert not ember.isfinite(ember.tensor([1e38], dtype=ember.float16)).all().item()
    bits = np.arange(1 << 16)
    for name, exp_mask, man_mask in (("float16", 0x7C00, 0x03FF), ("bfloat16", 0x7F80, 0x007F)):
        x = _decode(bits, name)
        all_ones = (bits & exp_mask) == exp_mask
        np.testing.assert_array_equal(ember.isinf(x).numpy(), all_ones & ((bits & man_mask) == 0), err_msg=name)
        np.testing.assert_array_equal(ember.isnan(x).numpy(), all_ones & ((bits & man_mask) != 0), err_msg=name)
        assert ember.isfinite(x).numpy().sum() == (~all_ones).sum()
