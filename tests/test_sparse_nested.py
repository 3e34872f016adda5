"""CG-2: sparse COO tensors and ragged (nested) batches. A 1000x1000 COO matrix with 3 non-zeros
times a dense vector equals the dense computation with O(nnz) storage; a ragged batch with
lengths [2, 5, 3] round-trips; gradients flow through both."""
import numpy as np
import pytest

import ember
from ember import nested, sparse
from ember.testing import gradcheck


def test_cg2_coo_matvec_equals_dense_with_nnz_storage():
    idx = [[0, 500, 999], [3, 10, 999]]
    s = ember.sparse_coo_tensor(idx, [1.5, -2.0, 4.0], (1000, 1000))
    v = ember.randn(1000)
    dense = np.zeros((1000, 1000), np.float32)
    dense[tuple(np.array(idx))] = [1.5, -2.0, 4.0]
    np.testing.assert_allclose((s @ v).numpy(), dense @ v.numpy(), rtol=1e-6)
    assert s._nnz() == 3 and s.nbytes == 3 * 2 * 8 + 3 * 4  # O(nnz): 60 bytes, not 4 MB
    m = ember.randn(1000, 7)
    np.testing.assert_allclose(sparse.mm(s, m).numpy(), dense @ m.numpy(), rtol=1e-5, atol=1e-6)


def test_coo_duplicates_coalesce_to_dense_and_back():
    s = ember.sparse_coo_tensor([[1, 0, 1], [2, 0, 2]], [1.0, 2.0, 3.0], (2, 3))
    assert not s.is_coalesced()
    c = s.coalesce()
    assert c.is_coalesced() and c.indices().numpy().tolist() == [[0, 1], [0, 2]]
    assert c.values().numpy().tolist() == [2.0, 4.0]
    assert s.to_dense().numpy().tolist() == [[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]
    d = ember.tensor([[0.0, 5.0], [0.0, 0.0], [-1.0, 0.0]])
    sd = d.to_sparse()
    assert sd.indices().numpy().tolist() == [[0, 2], [1, 0]] and sd.to_dense().numpy().tolist() == d.numpy().tolist()
    assert (s + s).to_dense().numpy().tolist() == (2 * s).to_dense().numpy().tolist()
    assert s.t().shape == (3, 2) and s.t().to_dense().numpy().tolist() == s.to_dense().numpy().T.tolist()
    assert ember.sparse_coo_tensor([[0, 3]], [1.0, 1.0]).shape == (4,)  # size inferred


def test_coo_matmul_gradients_float64():
    vals = ember.tensor([0.5, -1.0, 2.0], dtype=ember.float64, requires_grad=True)
    m = ember.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    idx = ember.tensor([[0, 2, 2], [1, 0, 3]])
    gradcheck(lambda v, x: sparse.mm(sparse.sparse_coo_tensor(idx, v, (3, 4)), x), [vals, m])
    f = ember.jit(lambda v, x: sparse.mm(sparse.sparse_coo_tensor(idx, v, (3, 4)), x))
    np.testing.assert_allclose(f(vals.detach(), m.detach()).numpy(),
                               sparse.mm(sparse.sparse_coo_tensor(idx, vals.detach(), (3, 4)), m.detach()).numpy())


def test_coo_errors():
    with pytest.raises(IndexError, match="out of bounds"):
        ember.sparse_coo_tensor([[0, 5]], [1.0, 1.0], (3,))
    with pytest.raises(ember.ShapeError, match=r"\(2, 2\).*\(3,\)"):
        ember.sparse_coo_tensor([[0, 1], [0, 1]], [1.0, 2.0, 3.0])
    with pytest.raises(ember.ShapeError, match=r"sparse \(2, 2\) by dense \(3,\)"):
        sparse.mm(ember.sparse_coo_tensor([[0], [1]], [1.0], (2, 2)), ember.ones(3))


def test_cg2_ragged_batch_round_trips():
    parts = [ember.randn(n, 4) for n in (2, 5, 3)]
    nt = nested.nested_tensor(parts)
    assert nt.size() == (3, None, 4) and nt.lengths().numpy().tolist() == [2, 5, 3]
    assert nt.offsets().numpy().tolist() == [0, 2, 7, 10] and nt.values().shape == (10, 4)
    for a, b in zip(nt.unbind(), parts):
        assert (a.numpy() == b.numpy()).all()
    padded = nt.to_padded_tensor(0.0)
    assert padded.shape == (3, 5, 4) and (padded.numpy()[0, 2:] == 0).all()
    back = nested.from_padded(padded, [2, 5, 3])
    assert all((a.numpy() == b.numpy()).all() for a, b in zip(back.unbind(), parts))
    j = nested.nested_tensor_from_jagged(nt.values(), lengths=[2, 5, 3])
    assert [t.shape[0] for t in j.unbind()] == [2, 5, 3]
    assert nt.to_padded_tensor(-1.0, output_size=(3, 6, 4)).shape == (3, 6, 4)


def test_ragged_gradients_and_errors():
    parts = [ember.randn(n, 2, requires_grad=True) for n in (1, 3)]
    nt = nested.as_nested_tensor(parts)
    (nt.to_padded_tensor(0.0) ** 2).sum().backward()
    for p in parts:
        np.testing.assert_allclose(p.grad.numpy(), 2 * p.detach().numpy())
    with pytest.raises(ember.ShapeError, match=r"\(2, 3\), \(2, 4\)"):
        nested.nested_tensor([ember.ones(2, 3), ember.ones(2, 4)])
    with pytest.raises(ember.ShapeError, match="offsets"):
        nested.nested_tensor_from_jagged(ember.ones(5, 2), offsets=[0, 2, 4])
    with pytest.raises(ember.ShapeError, match="shorter"):
        nt.to_padded_tensor(0.0, output_size=(2, 2, 2))
