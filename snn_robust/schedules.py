"""Perturbation-radius schedules for robust training, defined per optimizer *iteration*.

The paper (Section 4.1) ramps eps linearly from 0 over the first 250 epochs and holds it for
50 more. Here a schedule counts iterations (optimizer steps), so the ramp is smooth inside an
epoch; :meth:`EpsSchedule.from_epochs` converts a schedule given in epochs with the number of
steps per epoch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .validation import check_int, check_number, check_positive_int

__all__ = ["EPS_SHAPES", "EpsSchedule"]

#: Ramp shapes: ``"linear"`` (the paper) and ``"smooth"`` (smoothstep, zero slope at both ends).
EPS_SHAPES = ("linear", "smooth")


def _check_int(name: str, value: Any) -> int:
    return check_int(f"EpsSchedule: {name}", value, 0)


def _check_eps(name: str, value: Any) -> float:
    return check_number(f"EpsSchedule: {name}", value, 0.0)


@dataclass(frozen=True)
class EpsSchedule:
    r"""Linear ramp of eps, then hold, as a function of the (0-based) iteration ``step``:

    .. math::
        \epsilon(k) = \begin{cases}
            \epsilon_0 & k < k_0 \\
            \epsilon_0 + (\epsilon_1 - \epsilon_0)\,\frac{k - k_0}{R} & k_0 \le k < k_0 + R \\
            \epsilon_1 & k \ge k_0 + R
        \end{cases}

    with ``eps_0 = start_eps``, ``eps_1 = final_eps``, ``k_0 = start_step`` and
    ``R = ramp_steps``. With ``shape="smooth"`` the ramp fraction ``u = (k - k_0) / R`` is
    replaced by the smoothstep ``3u^2 - 2u^3``: eps grows slowly at first, when the bounds of
    a naturally trained network are loosest, and lands on ``final_eps`` without a kink (the
    smoothed ramps of CROWN-IBP and of Shi et al. 2021 serve the same purpose). The ramp's
    first iteration uses ``start_eps`` and ``final_eps`` is
    first used at iteration ``k_0 + R`` (with ``ramp_steps=0``, from ``k_0`` on). The hold
    phase covers iterations ``k_0 + R .. k_0 + R + hold_steps - 1``; :attr:`total_steps`
    is the end of the hold, and later iterations keep ``final_eps``.

    The schedule is a pure function of ``step`` (the step counter lives with the training
    loop); :meth:`state_dict` / :meth:`from_state_dict` store its parameters in checkpoints.

    Example: ``EpsSchedule(0.12, ramp_steps=1000, hold_steps=200)(500) == 0.06``
    """

    final_eps: float
    ramp_steps: int
    hold_steps: int = 0
    start_step: int = 0
    start_eps: float = 0.0
    shape: str = "linear"

    def __post_init__(self) -> None:
        if self.shape not in EPS_SHAPES:
            raise ValueError(f"EpsSchedule: shape must be one of {EPS_SHAPES}, got {self.shape!r}")
        object.__setattr__(self, "final_eps", _check_eps("final_eps", self.final_eps))
        object.__setattr__(self, "start_eps", _check_eps("start_eps", self.start_eps))
        _check_int("ramp_steps", self.ramp_steps)
        _check_int("hold_steps", self.hold_steps)
        _check_int("start_step", self.start_step)

    @classmethod
    def from_epochs(
        cls,
        final_eps: float,
        ramp_epochs: float,
        hold_epochs: float,
        steps_per_epoch: int,
        start_epoch: float = 0.0,
        start_eps: float = 0.0,
        shape: str = "linear",
    ) -> "EpsSchedule":
        """A schedule given in (possibly fractional) epochs, rounded to whole iterations."""
        steps_per_epoch = check_positive_int("steps_per_epoch", steps_per_epoch)
        for name, value in (("ramp_epochs", ramp_epochs), ("hold_epochs", hold_epochs), ("start_epoch", start_epoch)):
            if not value >= 0:
                raise ValueError(f"EpsSchedule.from_epochs: {name} must be >= 0, got {value!r}")
        return cls(
            final_eps=final_eps,
            ramp_steps=int(round(ramp_epochs * steps_per_epoch)),
            hold_steps=int(round(hold_epochs * steps_per_epoch)),
            start_step=int(round(start_epoch * steps_per_epoch)),
            start_eps=start_eps,
            shape=shape,
        )

    @property
    def total_steps(self) -> int:
        """First iteration after the hold phase: ``start_step + ramp_steps + hold_steps``."""
        return self.start_step + self.ramp_steps + self.hold_steps

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"EpsSchedule: step must be an int, got {type(step).__name__}")
        if step < self.start_step:
            return self.start_eps
        done = step - self.start_step
        if done >= self.ramp_steps:
            return self.final_eps
        u = done / self.ramp_steps
        if self.shape == "smooth":
            u = u * u * (3.0 - 2.0 * u)
        return self.start_eps + (self.final_eps - self.start_eps) * u

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "EpsSchedule":
        return cls(**state)
