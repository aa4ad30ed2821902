"""snn-robust: certified bounds (S-IBP, S-CROWN) and robust training for spiking networks."""
from .adapters import from_snntorch, from_spikingjelly
from .attacks import EOTPGD, GreedyFlip, SpikeCompatibleAttack, SpikeCompatibleDigitalAttack
from .bounds import METHODS, compute_bounds, margin_spec
from .certificates import CodingCertificate, certify_over_codings, clopper_pearson_lower, event_l0_bounds
from .errors import UnsupportedLayerError
from .evaluate import attack_error, certified_error, clean_error
from .loss import bound_logits, certified_loss
from .models import paper_model
from .network import SpikingNetwork
from .neuron import LIF, Rectangular
from .perturbations import DigitalLinf, DirectLinf, Perturbation, SpikeL0, bernoulli_encode
from .schedules import EpsSchedule
from .training import CleanLoss, RobustTrainingStep, TrainConfig, TrainingStep, fit

__version__ = "0.1.0"

__all__ = [
    "EOTPGD",
    "CleanLoss",
    "CodingCertificate",
    "EpsSchedule",
    "GreedyFlip",
    "RobustTrainingStep",
    "SpikeCompatibleAttack",
    "SpikeCompatibleDigitalAttack",
    "TrainConfig",
    "TrainingStep",
    "attack_error",
    "certified_error",
    "clean_error",
    "fit",
    "paper_model",
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
    "certify_over_codings",
    "clopper_pearson_lower",
    "compute_bounds",
    "event_l0_bounds",
    "from_snntorch",
    "from_spikingjelly",
    "margin_spec",
]
