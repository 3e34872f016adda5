"""The gradient codecs of ember.distributed.compression (DT-13), without MPI: fp16 / bf16 round as
numpy / ml_dtypes round, fp8 e4m3 scales each message by max|x| / 448 (zeros stay zeros, inf and
NaN are refused), message sizes, and the ring schedule on one rank leaves the values alone."""
import ml_dtypes
import numpy as np
import pytest

from ember.distributed.compression import BF16, FP8, FP16, codec
from ember.distributed.errors import DistributedError


@pytest.mark.parametrize("make,np_dt", [(FP16, np.float16), (BF16, ml_dtypes.bfloat16)])
def test_dt13_half_codecs_round_as_astype(make, np_dt):
    c = make()
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32) * np.float32(1e-3)
    x[:4] = [0.0, -0.0, 65504.0, 1e-8]
    assert c.nbytes(x.size) == 2 * x.size
    np.testing.assert_array_equal(c.roundtrip(x), x.astype(np_dt).astype(np.float32))


def test_dt13_fp8_scales_each_message():
    c = FP8()
    assert c.nbytes(10) == 14 and c.error_feedback and not FP8(error_feedback=False).error_feedback
    x = np.random.default_rng(1).standard_normal(4096).astype(np.float32) * np.float32(1e-4)
    y = c.roundtrip(x)
    assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-6)  # the largest value is exact
    assert np.abs(y - x).max() <= np.abs(x).max() / 16  # 3 mantissa bits: half an ulp of 448 is 16
    np.testing.assert_array_equal(c.roundtrip(np.zeros(5, np.float32)), np.zeros(5, np.float32))
    with pytest.raises(DistributedError, match="inf or NaN"):
        c.roundtrip(np.array([1.0, np.inf], np.float32))


def test_dt13_codec_names():
    assert codec(None) is None and codec("fp16").name == "fp16" and codec("bf16").name == "bf16"
    assert codec("fp8").name == "fp8"
    c = FP16()
    assert codec(c) is c
    with pytest.raises(ValueError, match="unknown gradient compression"):
        codec("int4")
