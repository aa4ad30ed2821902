"""Pieces shared by the adapter tests: random inputs and input boxes (the soundness check
itself is ``helpers.assert_sound``, run with the framework's own forward pass)."""
from __future__ import annotations

import torch
from torch import nn

def input_box(x: torch.Tensor, unstable: int, gen: torch.Generator):
    """Binary bounds around the spike input ``x`` ``[T, B, ...]``: ``unstable`` random
    elements per step and sample may be 0 or 1, the rest keep their value."""
    T, B = x.shape[:2]
    flat = x.reshape(T, B, -1)
    picks = torch.rand(flat.shape, generator=gen).argsort(-1)[..., :unstable]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, picks, True)
    return flat.masked_fill(mask, 0.0).reshape(x.shape), flat.masked_fill(mask, 1.0).reshape(x.shape)


def random_input(cfg: dict, input_shapes: dict, gen: torch.Generator) -> torch.Tensor:
    """``[T, 5, ...]`` input for a drawn configuration: binary spikes, or analog currents
    (multiples of 0.5 when ``cfg["exact"]``, so membranes can land exactly on thresholds)."""
    shape = (cfg["steps"], 5, *input_shapes[cfg["arch"]])
    if cfg.get("analog"):
        return torch.randint(0, 5, shape, generator=gen) * 0.5 if cfg["exact"] else torch.rand(shape, generator=gen) * 2
    return torch.rand(shape, generator=gen).bernoulli(generator=gen)


def init_weights(model: nn.Module, exact: bool, gen: torch.Generator, gain: float = 1.0, bias_scale: float = 0.2) -> None:
    """Dyadic weights (exact sums, membranes land exactly on the threshold) or random ones."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                if exact:
                    mod.weight.copy_(torch.randint(-2, 3, mod.weight.shape, generator=gen) * 0.5)
                    mod.bias.copy_(torch.randint(-1, 2, mod.bias.shape, generator=gen) * 0.5)
                else:
                    fan_in = mod.weight[0].numel()
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * gain * 2.0 / fan_in**0.5)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * bias_scale)
