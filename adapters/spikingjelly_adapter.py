"""SpikingJelly -> :class:`~snn_robust.SpikingNetwork` (SpikingJelly 2.0.0 and 0.0.0.0.14).

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

A SpikingJelly node keeps ``v`` (the membrane after the reset of the last step) and per
step charges ``h``, fires ``s = [h >= th]`` and resets ``v = (1 - s) h`` (``v_reset=0.``)
or ``v = h - s th`` (``v_reset=None``)::

    LIFNode, decay_input=True:    h = v + (x - v) / tau       alpha = 1 - 1/tau, scale = 1/tau
    LIFNode, decay_input=False:   h = v - v / tau + x         alpha = 1 - 1/tau, scale = 1
    ParametricLIFNode:            the same with 1/tau = sigmoid(w)   (w: a shared Parameter)
    IFNode:                       h = v + x                    alpha = 1,         scale = 1

With ``m_t = h_t`` this is :class:`~snn_robust.LIF` with ``firing=">="`` and, for the
soft reset, the subtracted threshold decayed with the membrane (``kappa = alpha``).
The twin repeats each version's floating-point order, which differs between the two
releases (and, in 0.0.0.0.14, between training and eval mode for
``LIFNode(decay_input=False, v_reset=0.)``), so spikes match bit for bit.

Step modes: in ``'m'`` mode a model takes ``[T, B, ...]``; stateless SpikingJelly layers
fold time into the batch, ``layer.SeqToANNContainer`` does so for the torch layers inside
it and ``layer.MultiStepContainer`` runs its single-step contents step by step. In ``'s'``
mode everything sees one step ``[B, ...]``. Either way every spatial layer applies the
same function at each step, which is what the converted network computes.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError
from snn_robust.layers import RateReadout
from snn_robust.neuron import LIF, spike
from snn_robust.validation import check_number

from ._common import (
    ROOT,
    Collected,
    FromSource,
    batchnorm_twin,
    check_dropout,
    check_heaviside,
    child_path,
    flatten_twin,
    plain_sequential,
    plain_twin,
    qualname,
    refuse_batchnorm,
    require_sequential,
    scan_layers,
)
from ._trace import convert_traced

__all__ = ["from_spikingjelly", "SpikingJellyNode"]

_END_HINT = "end the model with a spiking node (e.g. neuron.LIFNode after the last layer.Linear)"

# Contexts a module can run in:
#   "s"    single-step network: it sees one step [B, ...]
#   "m"    multi-step network, outside containers: it sees [T, B, ...]
#   "fold" inside SeqToANNContainer: it sees [T*B, ...] (time folded into the batch)
#   "step" inside MultiStepContainer: it sees one step [B, ...], called T times
_PER_STEP = ("s", "fold", "step")


# -- live neuron parameters (module-level functions: picklable) ------------------------
def _one(node: nn.Module) -> float:
    return 1.0


def _v_threshold(node: nn.Module) -> float:
    return node.v_threshold


def _lif_alpha(node: nn.Module) -> float:
    return 1.0 - 1.0 / node.tau


def _lif_scale(node: nn.Module) -> float:
    return 1.0 / node.tau if node.decay_input else 1.0


def _plif_alpha(node: nn.Module) -> Tensor:
    return 1.0 - node.w.sigmoid()


def _plif_scale(node: nn.Module) -> Tensor | float:
    return node.w.sigmoid() if node.decay_input else 1.0


_KINDS = {
    "IF": (_one, _one),
    "LIF": (_lif_alpha, _lif_scale),
    "PLIF": (_plif_alpha, _plif_scale),
}


class SpikingJellyNode(LIF):
    """The LIF twin of one SpikingJelly ``IFNode`` / ``LIFNode`` / ``ParametricLIFNode``.

    ``tau``, ``v_threshold`` and ``decay_input`` are read from the node at every use and
    PLIF's ``w`` is the node's own Parameter. The reset kind is fixed at conversion.
    """

    def __init__(self, node: nn.Module, kind: str, legacy: bool, surrogate=None, reference: nn.Module | None = None):
        alpha_of, scale_of = _KINDS[kind]
        super().__init__(
            alpha=FromSource(node, alpha_of, reference),
            threshold=FromSource(node, _v_threshold, reference),
            reset="subtract" if node.v_reset is None else "zero",
            firing=">=",
            input_scale=FromSource(node, scale_of, reference),
            decay_reset=True,
            surrogate=surrogate,
        )
        self.kind = kind
        self.legacy = bool(legacy)

    @property
    def node(self) -> nn.Module:
        return self._threshold.source

    @property
    def layer_kind(self) -> str:
        return qualname(self.node)

    def check_source(self, where: str) -> None:
        # tau is a Python float: 1/tau would raise ZeroDivisionError for 0 and give a
        # decay outside [0, 1] below 1, so name it before alpha is read from it.
        if self.kind == "LIF":
            check_number(f"{where}: tau", self.node.tau, 1.0)

    def parameter_checks(self) -> list[tuple[str, Tensor, str]]:
        checks = [("v_threshold", self.threshold, "positive")]
        if self.kind == "PLIF":
            checks.append(("w", self.node.w, "finite"))
        if self.kind != "IF":
            decay = "1 - 1/tau" if self.kind == "LIF" else "1 - sigmoid(w)"
            checks += [(f"decay {decay}", self.alpha, "unit"), ("input scale", self.input_scale, "positive")]
        return checks

    def charge(self, m_prev: Tensor, s_prev: Tensor, sp: Tensor) -> Tensor:
        node = self.node
        v_reset = node.v_reset
        # v: the membrane after the previous step's reset (SpikingJelly's state)
        if v_reset is None:
            v = m_prev - s_prev * node.v_threshold
        elif self.legacy:
            v = (1.0 - s_prev) * m_prev + s_prev * v_reset
        else:
            v = s_prev * v_reset + (1 - s_prev) * m_prev
        rv = 0.0 if v_reset is None else v_reset
        if self.kind == "IF":
            return v + sp
        if self.kind == "LIF":
            tau = node.tau
            if node.decay_input:
                return v + (sp - v) / tau if self.legacy else v + (sp - (v - rv)) / tau
            if self.legacy:
                if v_reset is not None and not node.training:  # 0.0.0.0.14's eval kernels
                    return v - (v - v_reset) / tau + sp
                return v * (1.0 - 1.0 / tau) + sp
            return v - (v - rv) / tau + sp
        q = node.w.sigmoid()
        if node.decay_input:
            return v + (sp - v) * q if self.legacy else v + (sp - (v - rv)) * q
        return v * (1.0 - q) + sp if self.legacy else v - (v - rv) * q + sp

    def fire(self, m: Tensor) -> Tensor:
        # SpikingJelly compares against the Python float threshold (in the input's dtype).
        return spike(m - self.node.v_threshold, ">=", self.surrogate)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kind={self.kind!r}, spikingjelly={'0.0.0.0.14' if self.legacy else '2.x'}"


def from_spikingjelly(
    model: nn.Module,
    example_input: Tensor | tuple | None = None,
    input_coding: str | None = None,
    surrogate: Callable | None = None,
    input_shape: Sequence[int] | None = None,
):
    """Convert a SpikingJelly model to a :class:`~snn_robust.SpikingNetwork`.

    Args:
        model: a chain of ``layer.Linear``, ``layer.Conv2d``, ``layer.AvgPool2d``,
            ``layer.MaxPool2d``, ``layer.AdaptiveAvgPool2d`` (where it equals an average
            pool), ``layer.BatchNorm1d/2d``, ``layer.Flatten``, ``layer.Dropout`` (in eval
            mode) and the same torch layers (``nn.Identity`` too), with
            ``neuron.IFNode``, ``neuron.LIFNode`` and ``neuron.ParametricLIFNode``
            (``v_reset=0.`` or ``None``), in one step mode, ending in a node: either an
            ``nn.Sequential`` (nested ones and SpikingJelly's ``SeqToANNContainer``,
            ``MultiStepContainer`` and ``StepModeContainer`` are fine), or any module whose
            forward runs such a chain (the examples' ``CSNN``, ``SNN``, ``MNISTNet``),
            given ``example_input``.
        example_input: one input exactly as ``model(...)`` takes it; required when
            ``model`` is not an ``nn.Sequential``. The model is run once on it to read the
            chain (module call order and tensor flow) and the converted network's spikes
            at every layer are checked against that run bit for bit (refused, saying
            where, if they differ). The run leaves the model as it was (states reset,
            buffers restored).
        input_coding: ``"spike"`` for binary spike inputs, ``"direct"`` when the first
            layer gets analog currents (e.g. an image repeated over the steps). Default:
            ``"spike"`` without ``example_input``; with it, ``"direct"`` when the first
            layer gets the same input at every step (the CSNN's repeat) or non-binary
            values, else ``"spike"``.
        surrogate: the surrogate gradient the bounds use in training (default: the
            paper's rectangular one); the forward pass is always the exact step.
        input_shape: the per-sample input shape (e.g. ``(1, 28, 28)``), optional; with it
            the network refuses inputs and bounds of another trailing shape (see
            :class:`~snn_robust.SpikingNetwork`).

    Returns:
        A network that shares the model's parameters (the same ``nn.Parameter``
        objects) and whose spikes equal SpikingJelly's own forward bit for bit
        (``backend='torch'``; a CuPy-backed 0.0.0.0.14 model in eval mode runs the same
        torch kernels, in training mode its CUDA kernel may round differently).

    Raises:
        UnsupportedLayerError: a module type that is not supported (other nodes,
            spiking BatchNorm variants), a model that is not an ``nn.Sequential`` given
            without ``example_input``, or a forward that is not a chain of module calls;
            named with its path in the user's model.
        ValueError: a supported module with an unsupported setting (a reset voltage other
            than 0, a non-spiking surrogate, mixed step modes, a layer that sees the wrong
            layout, dropout in training mode), converted spikes that differ from the
            model's on ``example_input``, a model that does not end in a node, a NaN or infinite ``tau``,
            ``v_threshold``, ``w``, weight or bias (named by its path, e.g. ``model.1``;
            checked again before every bound computation), or an ``input_shape`` the
            layers cannot take.

    Example::

        >>> net = snn_robust.from_spikingjelly(model)   # model in step_mode 'm' or 's'
        >>> net = snn_robust.from_spikingjelly(CSNN(T=4, channels=8), example_input=images)
        >>> lb = snn_robust.compute_bounds(net, lower, upper, labels)
    """
    from spikingjelly.activation_based import base, layer, neuron

    if isinstance(example_input, str):
        raise TypeError(f"example_input must be a tensor, got the string {example_input!r}: pass input_coding=... by name")
    is_neuron = lambda m: isinstance(m, SpikingJellyNode)  # noqa: E731
    converter = _Converter(base, layer, neuron, surrogate, model)
    if example_input is None:
        require_sequential(model, "spikingjelly", scan=lambda: converter.scan(model))
    mode, decided_by = converter.infer_mode(model, ROOT)
    converter.mode, converter.decided_by = mode, decided_by
    if example_input is not None:

        def reset(m: nn.Module) -> None:
            for sub in m.modules():
                if isinstance(sub, base.MemoryModule):
                    sub.reset()

        return convert_traced(
            model,
            example_input,
            known=converter.known,
            walk=lambda module, path, out: converter.walk(module, path, mode, out),
            per_step=mode == "s",
            reset=reset,
            is_neuron=is_neuron,
            end_hint=_END_HINT,
            input_coding=input_coding,
            input_shape=input_shape,
        )
    out = Collected()
    converter.walk(model, ROOT, mode, out)
    return out.build(is_neuron, input_coding or "spike", _END_HINT, input_shape)


class _Converter:
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
