"""Single bound operators on fake input bounds: exact backward for linear layers,
sound relaxation for max pooling, intervals that contain every output."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from snn_robust.bounds.spatial import bound_op

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
