"""snn-robust: certified bounds (S-IBP, S-CROWN) and robust training for spiking networks."""
from .adapters import from_snntorch, from_spikingjelly
from .bounds import METHODS, compute_bounds, margin_spec
from .errors import UnsupportedLayerError
from .loss import bound_logits, certified_loss
from .network import SpikingNetwork
from .neuron import LIF, Rectangular
from .perturbations import DigitalLinf, DirectLinf, Perturbation, SpikeL0, bernoulli_encode

__version__ = "0.1.0"

__all__ = [
    "LIF",
    "METHODS",
    "DigitalLinf",
    "DirectLinf",
    "Perturbation",
    "Rectangular",
    "SpikeL0",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "bernoulli_encode",
    "bound_logits",
    "certified_loss",
    "compute_bounds",
    "from_snntorch",
    "from_spikingjelly",
    "margin_spec",
]
