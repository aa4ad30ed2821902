"""Reading a class-based model's layer chain by running it once on an example input.

Shape glossary: ``T`` time steps, ``B`` batch, ``N...`` a layer's neuron shape.

A model whose ``forward`` is Python code (snnTorch tutorial 5's ``Net`` with its
``for step in range(num_steps)`` loop, SpikingJelly's ``CSNN`` that repeats the image
over ``T`` and averages the output) has no layer order to read from its structure. We
run it once with forward hooks on every submodule and record the call tree: which module
was called, with which tensors, returning which. The *chain* is the sequence of the
outermost calls the adapter knows (layers, neurons, ``nn.Sequential`` and the framework's
containers); a custom block is replaced by the calls inside it. Then:

* **steps.** A per-step model (snnTorch, SpikingJelly ``'s'``) calls the same modules
  once per step in the same order: the chain must be periodic, each module at most once
  per period; the period is one step. A multi-step model calls each module once.
* **tensor flow.** Each call must take the output of the previous one (the spikes for a
  neuron returning ``(spk, mem)``), or that output flattened to ``[B, -1]``; anything else
  (a residual sum, an op between the calls) is refused with both paths.
* **input.** The network's input is what the first layer received, time-major. When it
  is the same at every step (tutorial 5 passes ``x`` each step; the CSNN repeats it) the
  network is direct-coded (``input_coding="direct"``): the analog input enters the first
  layer at every step.
* **check.** The converted network is run on that input and the spikes of every neuron
  layer must equal those the model produced, bit for bit; otherwise the conversion is
  refused with the layer, the step and the count of differing spikes.

The run has no lasting effect on the model: neuron states are reset before and after,
and every buffer (BatchNorm running statistics included) is restored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from snn_robust.errors import UnsupportedLayerError

from ._common import ROOT, Collected, qualname

__all__ = ["Call", "convert_traced"]


@dataclass(eq=False)
class Call:
    """One call of a submodule during the example run."""

    module: nn.Module
    path: str
    args: tuple
    kwargs: dict
    output: object = None
    children: list["Call"] = field(default_factory=list)

    @property
    def input(self) -> Tensor | None:
        x = self.args[0] if self.args else next(iter(self.kwargs.values()), None)
        return x if isinstance(x, Tensor) else None

    @property
    def out(self) -> Tensor | None:
        y = self.output[0] if isinstance(self.output, (tuple, list)) and self.output else self.output
        return y if isinstance(y, Tensor) else None

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def _record(model: nn.Module, example_input) -> list[Call]:
    """The call tree of ``model(example_input)`` (roots: the outermost submodule calls)."""
    roots: list[Call] = []
    stack: list[Call] = []
    handles = []

    def hooks(path: str):
        def pre(module, args, kwargs):
            call = Call(module, path, args, dict(kwargs))
            (stack[-1].children if stack else roots).append(call)
            stack.append(call)

        def post(module, args, kwargs, output):
            if stack and stack[-1].module is module:
                stack.pop().output = output

        return pre, post

    try:
        for name, module in model.named_modules(prefix=ROOT):
            if module is model:
                continue
            pre, post = hooks(name)
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(module.register_forward_hook(post, with_kwargs=True))
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return roots


def _chain(calls: list[Call], known: Callable[[nn.Module], bool]) -> list[Call]:
    items: list[Call] = []
    for call in calls:
        if known(call.module) or not call.children:
            items.append(call)
        else:  # a custom block: its own calls form the chain
            items.extend(_chain(call.children, known))
    return items


def _period(items: list[Call], per_step: bool) -> int:
    """The number of calls per step (see the module docstring)."""
    n = len(items)
    first = items[0].module
    period = next((i for i in range(1, n) if items[i].module is first), n)
    order = ", ".join(c.path for c in items[: min(n, 2 * period + 2)])
    if n % period or any(items[i].module is not items[i % period].module for i in range(n)):
        raise UnsupportedLayerError(
            f"{ROOT}'s forward calls its modules in an order that does not repeat step by step ({order}, ...): "
            "only a chain of layers run in the same order at every step is supported"
        )
    seen: dict[int, str] = {}
    for call in items[:period]:
        if id(call.module) in seen:
            raise UnsupportedLayerError(
                f"{call.path} ({qualname(call.module)}) is called twice in one step of {ROOT}'s forward: a layer "
                "shared between two places of the chain is not supported; use a separate module for each place"
            )
        seen[id(call.module)] = call.path
    if not per_step and period != n:
        raise UnsupportedLayerError(
            f"{ROOT} is a multi-step model but its forward calls {items[0].path} {n // period} times: a multi-step "
            "model must run its chain once over the whole [T, B, ...] sequence"
        )
    return period


def _linked(prev: Call, nxt: Call, sample_dim: int) -> str:
    """``"same"`` if ``nxt`` takes ``prev``'s output, ``"flatten"`` if it takes it
    flattened from ``sample_dim`` on, else ``""``."""
    out, inp = prev.out, nxt.input
    if out is None or inp is None:
        return ""
    if inp is out:
        return "same"
    if (
        inp.data_ptr() == out.data_ptr()
        and out.dim() > sample_dim + 1
        and tuple(inp.shape) == tuple(out.flatten(sample_dim).shape)
        and torch.equal(inp, out.flatten(sample_dim))
    ):
        return "flatten"
    return ""


def _coding(x: Tensor, steps: int, requested: str | None) -> str:
    binary = bool(((x == 0) | (x == 1)).all())
    if requested is not None:
        if requested == "spike" and not binary:
            raise ValueError(
                "input_coding='spike' but the first layer of the model gets non-binary values in the example input: "
                "spike inputs must be 0/1 (event frames from tonic's ToFrame hold event counts: binarize them with "
                "(frames > 0).float()); use input_coding='direct' for analog inputs"
            )
        return requested
    repeated = steps > 1 and all(torch.equal(x[t], x[0]) for t in range(1, steps))
    return "spike" if binary and not repeated else "direct"


def _snapshot(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    return [(b, b.detach().clone()) for b in model.buffers()]


def _restore(saved: list[tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for b, value in saved:
            if b.shape == value.shape:
                b.copy_(value)


def convert_traced(
    model: nn.Module,
    example_input,
    *,
    known: Callable[[nn.Module], bool],
    walk: Callable[[nn.Module, str, Collected], None],
    per_step: bool,
    reset: Callable[[nn.Module], None],
    is_neuron: Callable[[nn.Module], bool],
    end_hint: str,
    input_coding: str | None,
    input_shape=None,
    check_calls: Callable[[list[Call], int], None] | None = None,
):
    """Run ``model(example_input)``, read its chain, convert it with ``walk`` (the
    framework's converter on one module) and check it against the run. ``per_step``: the
    model's modules see one step ``[B, ...]`` per call (else ``[T, B, ...]`` once)."""
    if not isinstance(example_input, (Tensor, tuple)):
        raise TypeError(
            f"example_input must be a tensor (or a tuple of the forward's positional arguments), got "
            f"{type(example_input).__name__}; input_coding and surrogate are keyword arguments"
        )
    saved = _snapshot(model)
    reset(model)
    try:
        with torch.no_grad():
            roots = _record(model, example_input)
        reset(model)
        items = _chain(roots, known)
        if not items:
            raise UnsupportedLayerError(f"{ROOT}'s forward called none of its submodules on example_input")
        period = _period(items, per_step)
        if check_calls is not None:
            check_calls(items, period)
        steps = len(items) // period
        sample_dim = 1 if per_step else 2

        out = Collected()
        for k, call in enumerate(items[:period]):
            if k > 0:
                for t in range(steps):
                    prev, nxt = items[t * period + k - 1], items[t * period + k]
                    link = _linked(prev, nxt, sample_dim)
                    if not link:
                        raise UnsupportedLayerError(
                            f"{nxt.path} ({qualname(nxt.module)}) does not take the output of {prev.path} "
                            f"({qualname(prev.module)}) in {ROOT}'s forward: something that is not a module call "
                            "changes it in between (or it comes from elsewhere, e.g. a skip connection); only a chain "
                            "of module calls is supported (a flatten or view to [B, -1] between them is fine)"
                        )
                if link == "flatten":
                    out.add(nn.Flatten(), f"{ROOT}.forward (flatten before {call.path})", call.module)
            walk(call.module, call.path, out)

        firsts = [items[t * period].input for t in range(steps)]
        if any(x is None for x in firsts):
            raise UnsupportedLayerError(f"{items[0].path} ({qualname(items[0].module)}) did not get a tensor input")
        outputs = {id(c.out) for root in roots for c in root.walk() if c.out is not None and c.out is not c.input}
        if any(id(x) in outputs for x in firsts):
            raise UnsupportedLayerError(
                f"{items[0].path} gets a module's output as its input: feedback over time is not supported"
            )
        x = torch.stack(firsts) if per_step else firsts[0]
        if x.dim() < 3:
            raise ValueError(
                f"{items[0].path} gets input of shape {tuple(firsts[0].shape)} in a multi-step model: expected "
                "[T, B, ...]"
            )
        shape = tuple(x.shape[2:]) if input_shape is None else input_shape
        net = out.build(is_neuron, _coding(x, x.shape[0], input_coding), end_hint, shape)
        trains = _verify(net, out, roots, x, is_neuron)
        if net.readout is not None:
            source = out.readout[2] if out.readout is not None else out.sources[-1]
            path = out.readout[1] if out.readout is not None else out.names[-1]
            _verify_readout(net, source, path, roots, trains[-1])
    finally:
        reset(model)
        _restore(saved)
    for layer in net.layers:  # the example run's batch is not a clean batch of any training step
        if hasattr(layer, "clean_stats"):
            layer.clean_stats = None
    return net


def _verify(net, out: Collected, roots: list[Call], x: Tensor, is_neuron: Callable[[nn.Module], bool]) -> list[Tensor]:
    """The converted network's spikes at every neuron layer equal the model's own; returns
    those spike trains (the readout check reuses the last)."""
    by_module: dict[int, list[Tensor]] = {}
    for root in roots:
        for call in root.walk():
            if call.out is not None:
                by_module.setdefault(id(call.module), []).append(call.out)
    with torch.no_grad():
        trains = net.simulate(x)
    lifs = [(path, src) for layer, path, src in zip(out.layers, out.names, out.sources) if is_neuron(layer)]
    for train, (path, source) in zip(trains, lifs, strict=True):
        seen = by_module.get(id(source), [])
        if len(seen) == 1 and seen[0].dim() == train.dim():
            theirs = seen[0]
        elif seen and all(s.shape == seen[0].shape for s in seen):
            theirs = torch.stack(seen)
        else:
            theirs = None
        if theirs is None or theirs.shape != train.shape:
            got = "no output" if theirs is None else f"spikes of shape {tuple(theirs.shape)}"
            raise ValueError(
                f"{path} ({qualname(source)}): the model produced {got} on example_input, the converted network "
                f"{tuple(train.shape)} [T, B, N...]; conversion refused"
            )
        differ = theirs.to(train.dtype) != train
        if bool(differ.any()):
            step = int(differ.flatten(1).any(1).nonzero()[0])
            raise ValueError(
                f"{path} ({qualname(source)}): the converted network's spikes differ from {ROOT}'s own forward on "
                f"example_input at {int(differ.sum())} of {differ.numel()} places (first at step {step}): its forward "
                "does something between or around the layers that the chain does not show (a scaled or shifted input, "
                "a membrane not starting at zero, a state carried between calls); conversion refused"
            )
    return trains


def _verify_readout(net, source: nn.Module, path: str, roots: list[Call], last_train: Tensor) -> None:
    """The readout's outputs in the model, averaged over the steps (and flattened per
    sample: a Conv2d head's ``[C, 1, 1]``), equal the converted network's class scores
    (up to summation order) on the last spiking layer's train ``[T, B, N...]`` that
    :func:`_verify` simulated (what ``net(x)`` computes, without simulating again)."""
    seen = [c.out for root in roots for c in root.walk() if c.module is source and c.out is not None]
    with torch.no_grad():
        ours = net.readout(last_train.mean(0))
    multi = len(seen) == 1 and seen[0].shape[:2] == (last_train.shape[0], ours.shape[0])  # one call on [T, B, ...]
    theirs = seen[0] if multi else torch.stack(seen) if seen else None
    theirs = None if theirs is None else theirs.mean(0).flatten(1)
    if theirs is None or theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"{path} ({qualname(source)}): read as a readout of the output rates (its per-step outputs averaged "
            f"over the steps), but on example_input its outputs do not average to the converted network's class "
            "scores; conversion refused"
        )
