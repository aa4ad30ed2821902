"""Single bound operators on fake input bounds: exact backward for linear layers,
sound relaxation for max pooling, intervals that contain every output."""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from snn_robust.bounds.graph import bound_op

LINEAR_LAYERS = [
    (nn.Linear(7, 5), (7,)),
    (nn.Conv2d(2, 4, 3, 1, 1), (2, 8, 8)),
    (nn.Conv2d(4, 4, 3, 2, 1), (4, 4, 4)),
    (nn.Conv2d(3, 5, 3, 2, 0), (3, 9, 9)),
    (nn.Conv2d(3, 5, 3, 2, 1), (3, 8, 8)),
    (nn.Conv2d(2, 4, 2, 3, 0, dilation=2), (2, 10, 11)),
    (nn.Conv2d(4, 4, 3, 1, 1, groups=2, bias=False), (4, 5, 5)),
    (nn.AvgPool2d(2), (4, 4, 4)),
    (nn.AvgPool2d(2), (4, 5, 5)),
    (nn.AvgPool2d(3, 2, 1), (2, 7, 6)),
    (nn.Flatten(), (3, 2, 2)),
]


@pytest.mark.parametrize("module,shape", LINEAR_LAYERS, ids=lambda v: str(v))
def test_linear_backward_is_exact(module, shape):
    torch.manual_seed(0)
    op = bound_op(module, "layer")
    x = torch.randn(6, *shape)
    y = module(x)
    A = torch.randn(6, 3, *y.shape[1:])
    A_in, bias = op.backward(A, x, x)
    assert A_in.shape == (6, 3, *shape)
    lhs = (A * y.unsqueeze(1)).flatten(2).sum(-1)
    rhs = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
    torch.testing.assert_close(lhs, rhs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("module,shape", LINEAR_LAYERS + [(nn.MaxPool2d(2), (3, 4, 4)), (nn.MaxPool2d(3, 2, 1), (2, 7, 7))],
                         ids=lambda v: str(v))
def test_interval_contains_outputs(module, shape):
    torch.manual_seed(1)
    op = bound_op(module, "layer")
    l = torch.randn(4, *shape)
    u = l + torch.rand(4, *shape)
    yl, yu = op.interval(l, u)
    for _ in range(200):
        y = module(l + torch.rand_like(l) * (u - l))
        assert (y >= yl - 1e-5).all() and (y <= yu + 1e-5).all()


@pytest.mark.parametrize("pool,shape", [(nn.MaxPool2d(2), (3, 4, 4)), (nn.MaxPool2d(3, 2, 1), (2, 7, 7)),
                                        (nn.MaxPool2d(2, 1), (2, 5, 5))])
def test_maxpool_relaxation_is_sound(pool, shape):
    torch.manual_seed(2)
    op = bound_op(pool, "pool")
    l = torch.randn(5, *shape)
    u = l + torch.rand(5, *shape) * torch.rand(5, *shape).round()  # some windows decided, some not
    A = torch.randn(5, 4, *pool(l).shape[1:])
    A_in, bias = op.backward(A, l, u)
    for _ in range(500):
        x = l + torch.rand_like(l) * (u - l)
        value = (A * pool(x).unsqueeze(1)).flatten(2).sum(-1)
        bound = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
        assert (bound <= value + 1e-5).all()


def test_maxpool_exact_when_window_decided():
    pool = nn.MaxPool2d(2)
    op = bound_op(pool, "pool")
    x = torch.randn(3, 2, 4, 4)
    A = torch.randn(3, 2, 2, 2, 2)
    A_in, bias = op.backward(A, x, x)  # point interval: every window decided
    value = (A * pool(x).unsqueeze(1)).flatten(2).sum(-1)
    bound = (A_in * x.unsqueeze(1)).flatten(2).sum(-1) + bias
    torch.testing.assert_close(bound, value)


@pytest.mark.parametrize("module,shape", [(nn.Linear(700, 9), (700,)), (nn.Conv2d(64, 8, 3, 1, 1), (64, 5, 5)),
                                          (nn.AvgPool2d(3, 2, 1), (4, 7, 7))], ids=lambda v: str(v))
@pytest.mark.parametrize("binary", [True, False])
def test_widened_interval_holds_float_results_in_other_orders(module, shape, binary):
    """The interval widened by ``rounding_error`` contains the exact (float64) outputs and
    float32 outputs computed in other summation orders (input features permuted, float64
    accumulation rounded once), for every input sampled in the box."""
    from snn_robust.bounds.rounding import set_error_model

    torch.manual_seed(3)
    op = bound_op(module, "layer")
    l = (torch.rand(3, *shape) < 0.3).float() if binary else torch.randn(3, *shape)
    u = torch.maximum(l, (torch.rand(3, *shape) < 0.3).float()) if binary else l + 0.1 * torch.rand(3, *shape)
    previous = set_error_model("any-order")
    try:
        err = op.rounding_error(l, u)
    finally:
        set_error_model(previous)
    yl, yu = op.interval(l, u)
    yl, yu = yl - err, yu + err
    assert (err >= 0).all() and (err > 0).any()
    module64 = copy.deepcopy(module).double()
    perm = torch.randperm(shape[0])
    for _ in range(20):
        x = torch.where(torch.rand_like(l) < 0.5, l, u) if binary else l + torch.rand_like(l) * (u - l)
        candidates = [module(x), module64(x.double()).float()]
        if isinstance(module, (nn.Linear, nn.Conv2d)):  # the same sums with the inputs in another order
            shuffled = copy.deepcopy(module)
            with torch.no_grad():
                shuffled.weight.copy_(module.weight[:, perm])
            candidates.append(shuffled(x[:, perm]))
        for y in candidates:
            assert (y >= yl).all() and (y <= yu).all()


def test_fixed_inputs_are_not_widened_in_the_default_model():
    """Outputs whose whole window is fixed are the module's own float; the others widen."""
    conv = nn.Conv2d(3, 4, 3, 1, 1)
    op = bound_op(conv, "conv")
    l = (torch.rand(2, 3, 6, 6) < 0.5).float()
    u = l.clone()
    u[0, :, 0, 0] = 1.0  # one free input pixel: only the outputs that read it widen
    err = op.rounding_error(l, u)
    assert (err[1] == 0).all() and (err[0, :, :2, :2] > 0).all()
    assert (err[0, :, 2:, :] == 0).all() and (err[0, :, :, 2:] == 0).all()
    yl, _ = op.interval(l, l)
    assert torch.equal(yl, conv(l))


@pytest.fixture
def row_branches(monkeypatch):
    """Records, per call of ``spatial._used_rows``, whether the sparse branch was taken."""
    from snn_robust.bounds import spatial

    taken: list[bool] = []
    plain = spatial._used_rows

    def recording(A):
        idx = plain(A)
        taken.append(idx is not None)
        return idx

    monkeypatch.setattr(spatial, "_used_rows", recording)
    return taken


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), used=st.integers(0, 50))
def test_sparse_rows_matmul_matches_dense(seed, used, row_branches):
    """``_sparse_rows_matmul`` skips the rows of W whose coefficients are all zero: with
    few used columns (the fast branch, checked) and with many (dense) it equals the dense
    product (float64: only the summation order differs)."""
    from snn_robust.bounds.spatial import SPARSE_ROWS_SHARE, _sparse_rows_matmul

    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(50, 30, generator=gen, dtype=torch.float64)
    A = torch.randn(6, 5, 50, generator=gen, dtype=torch.float64)
    A[..., torch.randperm(50, generator=gen)[used:]] = 0.0
    row_branches.clear()
    torch.testing.assert_close(_sparse_rows_matmul(A, W), A @ W, rtol=1e-12, atol=1e-12)
    assert row_branches == [used <= SPARSE_ROWS_SHARE * 50]


def test_linear_backward_matches_the_transpose_on_the_sparse_branch(row_branches):
    """``BoundLinear.backward`` (rows gathered) equals the generic affine backward
    (``A @ W`` through :meth:`transpose`) on coefficients with few used columns."""
    from snn_robust.bounds.spatial import BoundLinear, _AffineOp

    torch.manual_seed(6)
    lin = nn.Linear(40, 12).double()
    op = bound_op(lin, "lin")
    assert isinstance(op, BoundLinear)
    A = torch.randn(4, 3, 12, dtype=torch.float64)
    A[..., 2:] = 0.0
    x = torch.rand(4, 40, dtype=torch.float64)
    row_branches.clear()
    A_in, bias = op.backward(A, x, x)
    assert row_branches == [True]
    A_ref, bias_ref = _AffineOp.backward(op, A, x, x)
    torch.testing.assert_close(A_in, A_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(bias, bias_ref)


@pytest.mark.parametrize("free", [0.0, 0.2], ids=["point", "box"])
def test_linear_concretize_matches_the_generic_one(free, row_branches):
    """``BoundLinear.concretize`` (centre through the module, ``|A W| . rad`` only where
    the radius is nonzero, sparse rows) equals :meth:`BoundOp.concretize` (the backward
    pass, then the box), and both equal the dense ``min`` over the box of ``A . (W x + b)``;
    with no radius at all (the early return) the row gathering is skipped entirely."""
    from snn_robust.bounds.spatial import BoundOp

    torch.manual_seed(5)
    lin = nn.Linear(40, 12).double()
    op = bound_op(lin, "lin")
    A = torch.randn(4, 3, 12, dtype=torch.float64)
    A[..., :10] = 0.0  # sparse coefficients: the fast row-gathering branch
    l = (torch.rand(4, 40) < 0.4).double()
    u = torch.where(torch.rand(4, 40) < free, torch.ones_like(l), l)
    row_branches.clear()
    fast = op.concretize(A, l, u)
    assert row_branches == ([] if free == 0.0 else [True])
    AW = A @ lin.weight
    mid, rad = (u + l) / 2, (u - l) / 2
    dense = (AW * mid.unsqueeze(1)).sum(-1) - (AW.abs() * rad.unsqueeze(1)).sum(-1) + A @ lin.bias
    torch.testing.assert_close(fast, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, BoundOp.concretize(op, A, l, u), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("module,shape", [m for m in LINEAR_LAYERS if not isinstance(m[0], nn.Flatten)],
                         ids=lambda v: str(v))
def test_affine_propagate_error_matches_the_generic_one(module, shape):
    """``_AffineOp.propagate_error`` (``|W| err`` directly) equals the generic
    :meth:`BoundOp.propagate_error` (the radius of the interval of ``[-err, err]``)."""
    from snn_robust.bounds.spatial import BoundOp, _AffineOp

    torch.manual_seed(7)
    module = copy.deepcopy(module).double()
    op = bound_op(module, "layer")
    assert isinstance(op, _AffineOp)
    err = torch.rand(3, *shape, dtype=torch.float64) * 1e-3
    torch.testing.assert_close(op.propagate_error(err), BoundOp.propagate_error(op, err), rtol=1e-9, atol=1e-15)
