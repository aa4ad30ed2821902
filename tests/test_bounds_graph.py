"""The bound graph: built by the engine from a network (which imports nothing of it), one
operator per layer, cached per network object; unsupported layer settings refused when
the network is built, by name."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import snn_robust as sr
from snn_robust.bounds.graph import _OPS, BoundStage, bound_graph, bound_view
from snn_robust.bounds.lif import RESETS, BoundLIF
from snn_robust.network import SPATIAL_LAYERS
from snn_robust.neuron import RESETS as NEURON_RESETS


def _net() -> sr.SpikingNetwork:
    return sr.SpikingNetwork(
        [nn.Conv2d(1, 2, 3), sr.LIF(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3), sr.LIF(reset="subtract")],
        names=["conv", "lif1", "pool", "flat", "fc", "lif2"],
    )


def test_graph_has_one_operator_per_layer_and_is_cached():
    net = _net()
    graph = bound_graph(net)
    assert [type(s) for s in graph] == [BoundStage, BoundStage]
    assert [[op.name for op in s.ops] for s in graph] == [["conv"], ["pool", "flat", "fc"]]
    assert [op.module for s in graph for op in s.ops] == [net.layers[i] for i in (0, 2, 3, 4)]  # shared modules
    assert [type(s.neuron) for s in graph] == [BoundLIF, BoundLIF]
    assert [s.neuron.reset.name for s in graph] == ["zero", "subtract"]
    assert bound_graph(net) is graph
    assert bound_graph(_net()) is not graph


def test_a_view_is_seen_through_its_own_graph():
    net = _net()
    graph = bound_graph(net)
    view = bound_view(net, graph[:1])
    assert bound_graph(view) == graph[:1] and bound_graph(net) is graph
    assert view.layers is net.layers  # shallow: the same modules


def test_every_network_layer_and_reset_kind_has_a_bound_operator():
    assert all(any(issubclass(kind, op_type) for op_type in _OPS) for kind in SPATIAL_LAYERS)
    assert set(RESETS) == set(NEURON_RESETS)


@pytest.mark.parametrize("layer,words", [
    (nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (nn.Conv2d(1, 2, 3, padding="same"), "padding='same'"),
    (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
    (nn.MaxPool2d(2, return_indices=True), "return_indices"),
])
def test_unsupported_settings_are_refused_when_the_network_is_built(layer, words):
    with pytest.raises(sr.UnsupportedLayerError, match=r"layer features\.0 \(") as info:
        sr.SpikingNetwork([layer, sr.LIF()], names=["features.0", "features.1"])
    assert words in str(info.value)


def test_the_network_module_does_not_load_the_bound_engine():
    code = (
        "import sys, torch, snn_robust.network as n\n"
        "n.SpikingNetwork([torch.nn.Linear(2, 2), __import__('snn_robust.neuron').neuron.LIF()])\n"
        "print(sorted(m for m in sys.modules if m.startswith('snn_robust.bounds')))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_bounds_follow_the_modules_after_the_graph_is_built():
    """The operators read the live modules: a weight changed after the first bound
    changes the next one (the cached graph holds no copies)."""
    torch.manual_seed(0)
    net = sr.SpikingNetwork([nn.Flatten(), nn.Linear(4, 3), sr.LIF(0.5, 0.2)])
    x = torch.ones(2, 1, 4)
    before = sr.compute_bounds(net, x, x)[0]
    with torch.no_grad():
        net.layers[1].bias.fill_(5.0)  # every output fires at every step
    after = sr.compute_bounds(net, x, x)[0]
    assert torch.equal(after, torch.ones_like(after)) and not torch.equal(before, after)
