"""PI-3: the book's convolution and pooling examples through ember.nn.functional."""
import numpy as np

import ember
import ember.nn.functional as F


def test_pi3_patch_convolution_gives_12():
    """PI-3: patch [[1,2,2],[3,2,3],[4,1,3]] convolved with [[1,0,1],[0,1,0],[1,0,1]] is 12."""
    patch = ember.tensor([[[[1., 2., 2.], [3., 2., 3.], [4., 1., 3.]]]])
    kernel = ember.tensor([[[[1., 0., 1.], [0., 1., 0.], [1., 0., 1.]]]])
    out = F.conv2d(patch, kernel)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == 12.0


def test_pi3_output_size_and_channels():
    """PI-3: a 4x4 input and a 3x3 kernel at stride 1 give 2x2; out_c x in_c kernels sum channels."""
    x = ember.randn(2, 3, 4, 4)
    w = ember.randn(5, 3, 3, 3)
    out = F.conv2d(x, w)
    assert out.shape == (2, 5, 2, 2)
    xs, ws = x.numpy(), w.numpy()
    want = sum(np.sum(xs[1, c, 1:4, 0:3] * ws[4, c]) for c in range(3))
    np.testing.assert_allclose(out.numpy()[1, 4, 1, 0], want, rtol=1e-5)


def test_pi3_pooling_pads_with_minus_inf_and_zero():
    """PI-3: max-pool pads with -inf (an all-negative input stays negative); avg-pool pads with 0."""
    x = ember.full((1, 1, 2, 2), -5.0)
    mp = F.max_pool2d(x, 2, stride=1, padding=1)
    assert (mp.numpy() == -5.0).all()
    ap = F.avg_pool2d(ember.ones(1, 1, 2, 2), 2, stride=1, padding=1)
    np.testing.assert_allclose(ap.numpy()[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
