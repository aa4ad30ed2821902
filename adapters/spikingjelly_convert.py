"""The walk over a SpikingJelly model: one conversion table (module type -> handler),
step modes and the context each module runs in, refusals by path."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError
from snn_robust.layers import RateReadout

from ._common import (
    ROOT,
    Collected,
    batchnorm_twin,
    check_dropout,
    check_heaviside,
    child_path,
    flatten_twin,
    plain_sequential,
    plain_twin,
    qualname,
    refuse_batchnorm,
    scan_layers,
)
from .spikingjelly_neuron import SpikingJellyNode

__all__ = ["Converter"]

# Contexts a module can run in:
#   "s"    single-step network: it sees one step [B, ...]
#   "m"    multi-step network, outside containers: it sees [T, B, ...]
#   "fold" inside SeqToANNContainer: it sees [T*B, ...] (time folded into the batch)
#   "step" inside MultiStepContainer: it sees one step [B, ...], called T times
_PER_STEP = ("s", "fold", "step")


class Converter:
    def __init__(self, base, layer, neuron, surrogate, reference: nn.Module) -> None:
        self.base = base
        self.surrogate = surrogate
        self.reference = reference
        self.mode = "s"
        self.decided_by = ROOT
        self.nodes = {neuron.IFNode: "IF", neuron.LIFNode: "LIF", neuron.ParametricLIFNode: "PLIF"}
        self.multi_step_containers = (layer.SeqToANNContainer, layer.MultiStepContainer)
        self.step_mode_container = layer.StepModeContainer
        # The spatial layers: SpikingJelly's own and the torch layer each one wraps.
        sj_layers = {
            layer.Linear: nn.Linear,
            layer.Conv2d: nn.Conv2d,
            layer.AvgPool2d: nn.AvgPool2d,
            layer.MaxPool2d: nn.MaxPool2d,
            layer.Flatten: nn.Flatten,
        }
        for name in ("AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d"):  # not in every release
            if hasattr(layer, name):
                sj_layers[getattr(layer, name)] = getattr(nn, name)
        kinds = {
            nn.Linear: "linear",
            nn.Conv2d: "spatial",
            nn.AvgPool2d: "spatial",
            nn.MaxPool2d: "spatial",
            nn.AdaptiveAvgPool2d: "spatial",
            nn.Flatten: "flatten",
            nn.BatchNorm1d: "batchnorm",
            nn.BatchNorm2d: "batchnorm",
        }
        self.spatial_kind = {**kinds, **{sj: kinds[torch_type] for sj, torch_type in sj_layers.items()}}
        # One conversion table: exact module type -> handler(module, path, context, out).
        self.table: dict[type, Callable] = {torch_type: self._torch_layer for torch_type in kinds}
        self.table.update({sj: self._sj_layer for sj in sj_layers})
        self.table[nn.Identity] = self._skip
        for dropout in (nn.Dropout, layer.Dropout):
            self.table[dropout] = self._dropout
        self.table[nn.Sequential] = self._sequential
        if hasattr(layer, "VotingLayer"):
            self.table[layer.VotingLayer] = self._voting
        self.table[layer.SeqToANNContainer] = self._container
        self.table[layer.MultiStepContainer] = self._container
        self.table[layer.StepModeContainer] = self._container
        for node_type in self.nodes:
            self.table[node_type] = self._node

    # -- step mode ------------------------------------------------------------------
    def infer_mode(self, module: nn.Module, path: str) -> tuple[str, str]:
        """The network's step mode: that of its first node outside containers, or
        ``'m'`` if a multi-step container comes first (``'s'`` if neither exists).
        An unsupported node is refused here, by its path: otherwise the mode would be
        guessed without it and a correct layer blamed for the mismatch."""
        for sub_path, sub in _preorder(module, path, self._opaque):
            if type(sub) not in self.nodes and _is_node(sub, self.base):
                self._refuse(sub, sub_path)
            if type(sub) in self.nodes:
                return sub.step_mode, sub_path
            if isinstance(sub, self.multi_step_containers):
                return "m", sub_path
            if type(sub) is self.step_mode_container:
                return sub.step_mode, sub_path
        return "s", path

    def _opaque(self, module: nn.Module) -> bool:
        return isinstance(module, self.multi_step_containers) or type(module) is self.step_mode_container

    def _mixed(self, module: nn.Module, path: str, own: str, ctx: str) -> ValueError:
        return ValueError(
            f"{path} ({qualname(module)}) has step_mode={own!r} but runs in a {'multi' if ctx == 'm' else 'single'}-step "
            f"network ({self.decided_by} is {self.mode!r}); one mode for the whole network is supported: "
            f"spikingjelly.activation_based.functional.set_step_mode({ROOT}, {self.mode!r})"
        )

    # -- walking --------------------------------------------------------------------
    def walk(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        handler = self.table.get(type(module))
        if handler is None and plain_sequential(module):
            handler = self.table[nn.Sequential]
        if handler is None:
            self._refuse(module, path)
        handler(module, path, ctx, out)

    def _sequential(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        for name, child in module.named_children():
            self.walk(child, child_path(path, name), ctx, out)

    def _container(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        name = qualname(module)
        if type(module) is self.step_mode_container:
            if module.step_mode == "s":
                self._sequential(module, path, ctx, out)
                return
            inner = "step" if module.stateful else "fold"
        else:
            inner = "fold" if "SeqToANN" in type(module).__name__ else "step"
        if ctx != "m":
            raise ValueError(
                f"{path} ({name}) runs its contents over a [T, B, ...] sequence, but here it receives "
                f"{'one step [B, ...]' if ctx == 's' else 'the output of another container'}: use it only at the top "
                "level of a multi-step network (step_mode='m')"
            )
        self._sequential(module, path, inner, out)

    def known(self, module: nn.Module) -> bool:
        return type(module) in self.table or plain_sequential(module)

    def scan(self, model: nn.Module) -> None:
        """Check every leaf module of ``model`` on its own, in its own step mode (refusals
        name the real blocker before the missing example input)."""
        def visit(module: nn.Module, path: str) -> None:
            # in its own step mode (a bare torch layer's context is decided by the forward)
            own = getattr(module, "step_mode", "s") if type(module).__module__.startswith("spikingjelly") else "s"
            if not self._opaque(module):
                self.walk(module, path, "m" if own == "m" else "s", Collected())

        scan_layers(model, ROOT, self.known, visit)

    @staticmethod
    def _skip(module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        pass  # identity

    @staticmethod
    def _dropout(module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        check_dropout(module, path)  # identity at eval

    def _torch_layer(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        kind = self.spatial_kind[type(module)]
        if kind == "batchnorm" and ctx in _PER_STEP:
            out.add(batchnorm_twin(module, path, per_step=ctx != "fold"), path, module)
            return
        if ctx in _PER_STEP or kind == "linear":  # Linear acts on the last dim of [T, B, F] too
            twin = self._flatten_twin(module, path, start=1) if kind == "flatten" else None
            out.add(module if twin is None else twin, path, module)
            return
        # a bare torch layer in a multi-step network sees [T, B, ...]
        if kind == "flatten":
            twin = self._flatten_twin(module, path, start=2)
            out.add(plain_twin(module) if twin is None else twin, path, module)
            return
        raise ValueError(
            f"{path} ({qualname(module)}) receives [T, B, ...] in this multi-step network, which it cannot take per "
            f"step; use the SpikingJelly layer (layer.{type(module).__name__}(..., step_mode='m')) or wrap it in "
            "layer.SeqToANNContainer"
        )

    def _sj_layer(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        kind = self.spatial_kind[type(module)]
        own = module.step_mode
        if kind != "linear":  # layer.Linear is nn.Linear whatever its mode
            want = "m" if ctx == "m" else "s"
            if own != want:
                if ctx in ("fold", "step"):
                    raise ValueError(
                        f"{path} ({qualname(module)}) has step_mode='m' inside a container that already runs it per "
                        "step; set its step_mode to 's'"
                    )
                raise self._mixed(module, path, own, ctx)
            if kind == "flatten":
                twin = self._flatten_twin(module, path, start=1)
                if twin is not None:
                    out.add(twin, path, module)
                    return
            if kind == "batchnorm":  # 'm' folds time into the batch, as inside SeqToANNContainer
                out.add(batchnorm_twin(module, path, per_step=ctx in ("s", "step")), path, module)
                return
        out.add(plain_twin(module), path, module)

    def _voting(self, module: nn.Module, path: str, ctx: str, out: Collected) -> None:
        if ctx in ("s", "m") and getattr(module, "step_mode", ctx) != ctx:
            raise self._mixed(module, path, module.step_mode, ctx)
        out.set_readout(RateReadout("voting", group=module.voting_size), path, module)

    @staticmethod
    def _flatten_twin(module: nn.Flatten, path: str, start: int) -> nn.Module | None:
        layout = "[T, B, ...]" if start == 2 else "one step [B, ...]"
        return flatten_twin(
            module,
            path,
            start,
            lambda: (
                f"{path} ({qualname(module)}) has start_dim={module.start_dim}, end_dim={module.end_dim}, but it "
                f"receives {layout}: only start_dim={start} (through the last dimension) flattens each sample on its own"
            ),
        )

    def _node(self, node: nn.Module, path: str, ctx: str, out: Collected) -> None:
        kind = self.nodes[type(node)]
        name = qualname(node)
        if ctx == "fold":
            raise ValueError(
                f"{path} ({name}) sits inside layer.SeqToANNContainer, which folds time into the batch, so it "
                "would see T*B samples for a single step: put the node outside the container"
            )
        want = "m" if ctx == "m" else "s"
        if node.step_mode != want:
            raise self._mixed(node, path, node.step_mode, ctx)
        v_reset = node.v_reset
        if v_reset is not None and v_reset != 0.0:
            raise ValueError(
                f"{path} ({name}) has v_reset={v_reset!r}: only v_reset=0. (hard reset to zero) and v_reset=None "
                "(soft reset by subtraction) are supported"
            )
        if getattr(node, "_neuron_precision", None) is not None:
            raise ValueError(
                f"{path} ({name}) stores its state in reduced precision ({node._neuron_precision}); the bounds are "
                "for the full-precision neuron: clear the neuron precision before conversion"
            )
        fn = node.surrogate_function
        if not getattr(fn, "spiking", True):
            raise ValueError(
                f"{path} ({name}) has surrogate_function with spiking=False, which outputs analog values instead "
                "of spikes (graded spikes); use spiking=True"
            )
        check_heaviside(fn, inclusive=True, path=path, what=f"{name} surrogate_function")
        if kind == "PLIF" and not isinstance(node.w, Tensor):
            raise ValueError(f"{path} ({name}): w must be a tensor")
        legacy = not hasattr(node, "single_step_functional_forward")
        out.add(SpikingJellyNode(node, kind, legacy, self.surrogate, self.reference), path, node)

    def _refuse(self, module: nn.Module, path: str) -> None:
        refuse_batchnorm(module, path)
        name = qualname(module)
        nodes = "neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode"
        if _is_node(module, self.base):
            raise UnsupportedLayerError(
                f"{path} ({name}) is not supported: snn_robust bounds the LIF neuron (one membrane state, "
                f"hard or soft reset); use one of {nodes} (with v_reset=0. or None)"
            )
        if isinstance(module, self.base.MemoryModule):
            raise UnsupportedLayerError(
                f"{path} ({name}) is a stateful SpikingJelly module that is not supported; supported stateful "
                f"modules are {nodes}"
            )
        supported = (
            "layer.Linear, layer.Conv2d, layer.AvgPool2d, layer.MaxPool2d, layer.AdaptiveAvgPool2d, layer.BatchNorm1d, "
            "layer.BatchNorm2d, layer.Flatten, layer.Dropout and the "
            f"same torch layers, nn.Identity, nn.Dropout, {nodes}, inside nn.Sequential, layer.SeqToANNContainer, "
            "layer.MultiStepContainer or layer.StepModeContainer"
        )
        if len(list(module.children())) > 0:
            raise UnsupportedLayerError(
                f"{path} ({name}) is a custom container whose forward cannot be read: express it as an "
                f"nn.Sequential of supported layers ({supported})"
            )
        raise UnsupportedLayerError(f"{path} ({name}) is not supported; supported: {supported}")


def _is_node(module: nn.Module, base) -> bool:
    """Any SpikingJelly spiking node (2.0.0's BaseNode / SimpleBaseNode, 0.0.0.0.14's BaseNode)."""
    return isinstance(module, base.MemoryModule) and any(
        "Node" in cls.__name__ for cls in type(module).__mro__ if cls.__module__.startswith("spikingjelly")
    )


def _preorder(module: nn.Module, path: str, opaque: Callable[[nn.Module], bool]):
    """Modules in order, not descending into ``opaque`` ones."""
    yield path, module
    if not opaque(module):
        for name, child in module.named_children():
            yield from _preorder(child, child_path(path, name), opaque)
