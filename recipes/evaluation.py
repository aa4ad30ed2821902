"""The evaluation stages of a recipe run (:class:`EvaluationStages`, mixed into
:class:`~snn_robust.recipes.pipeline.RecipeRun`): clean error, eps search, attack error,
certified error, the stronger certificates and the S-CROWN loss. Each stage's result is one
JSON file under ``eval/`` (see the pipeline's module docstring)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from snn_robust import DigitalLinf, distributed
from snn_robust.datasets import attack_errors
from snn_robust.loss import certified_loss
from snn_robust.network import SpikingNetwork

from .search import search_eps

if TYPE_CHECKING:
    from .pipeline import _Ctx

__all__ = ["EvaluationStages"]


class EvaluationStages:
    """The evaluation stages of a :class:`~snn_robust.recipes.pipeline.RecipeRun` (which
    provides the configuration ``c``, the test set, the training perturbation set and
    ``_stage``, the bookkeeping that skips a stage whose result file exists)."""

    # provided by RecipeRun (with test_set, perturbation and _stage)
    c: _Ctx

    def clean(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        from snn_robust.evaluate import clean_error

        c = self.c
        return self._stage(f"clean-{tag}", c.out / "eval" / f"{tag}-clean.json", lambda: distributed.combine_errors(clean_error(
            net, self._test_share(), coding=c.recipe.coding, seeds=c.profile.seeds, batch_size=c.profile.eval_batch,
            progress=c.progress)).to_dict())

    def _test_share(self, max_samples: int | None = None) -> tuple[Tensor, Tensor]:
        """This process's share of the first ``max_samples`` test samples (all of them with one
        process); :func:`snn_robust.distributed.combine_errors` gives the error over all."""
        x, y = self.test_set()
        n = len(y) if max_samples is None else min(max_samples, len(y))
        return distributed.shard((x[:n], y[:n]))

    def search(self, attack: str, net: SpikingNetwork) -> dict[str, Any]:
        c = self.c
        p = c.profile

        def compute() -> dict[str, Any]:
            def error_at(e: float) -> float:
                r = attack_errors(net, self.test_set(), attack, [e], dataset=c.recipe.dataset, arch=c.arch,
                                  iters=p.attack_iters, eot_samples=p.eot_samples, seeds=p.attack_seeds[:1],
                                  batch_size=p.eval_batch, max_samples=p.search_samples, progress=False)
                return r["errors"][0]["error"]

            res = search_eps(error_at, p.search_targets, c.recipe.search_hi, p.search_iters)
            res["samples"] = min(p.search_samples, len(self.test_set()[1]))
            return res

        return self._stage(f"search-{attack}", c.out / "eval" / f"search-{attack}.json", compute)

    def attack(self, tag: str, net: SpikingNetwork, attack: str, searched: list[float]) -> dict[str, Any]:
        c = self.c
        p = c.profile
        eps = list(c.recipe.attack_eps) + list(searched)
        sources = ["paper"] * len(c.recipe.attack_eps) + [f"search {int(round(100 * t))}%" for t in p.search_targets]

        def compute() -> dict[str, Any]:
            res = attack_errors(net, self.test_set(), attack, eps, dataset=c.recipe.dataset, arch=c.arch,
                                iters=p.attack_iters, eot_samples=p.eot_samples, seeds=p.attack_seeds,
                                batch_size=p.eval_batch, progress=c.progress)
            res["sources"] = sources
            return res

        return self._stage(f"attack-{tag}-{attack}", c.out / "eval" / f"{tag}-attack-{attack}.json", compute)

    def certify(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        from snn_robust.evaluate import certified_error

        c = self.c
        p = c.profile

        def compute() -> dict[str, Any]:
            out: dict[str, Any] = {"eps": c.recipe.train_eps, "perturbation": repr(self.perturbation), "methods": {}}
            for method in p.certify_methods:
                out["methods"][method] = {}
                for steps in p.certify_steps:
                    r = certified_error(net, self._test_share(p.certify_samples), self.perturbation, steps, method,
                                        seeds=p.certify_seeds, batch_size=p.eval_batch, progress=c.progress)
                    out["methods"][method][str(steps)] = distributed.combine_errors(r).to_dict()
            return out

        return self._stage(f"certify-{tag}", c.out / "eval" / f"{tag}-certify.json", compute)

    def _ball_samples(self) -> int:
        p = self.c.profile
        n = p.ball_samples if p.ball_samples is not None else p.certify_samples
        total = len(self.test_set()[1])
        return total if n is None else min(n, total)

    def ball_certificate(self, tag: str, net: SpikingNetwork) -> dict[str, Any]:
        """The certificates stronger than the sampled one (docs/certificates.md), at T' = the
        smallest ``certify_steps``, on the first ``ball_samples`` test samples.

        Images: :func:`~snn_robust.certificates.coding_certificate_summary`, the
        Clopper-Pearson lower bound on the probability over coding maps that the whole
        ``DigitalLinf(train_eps)`` ball is certified (``coding_maps`` maps per sample, seed
        0), computed alike on every process (its per-sample lists are not sharded).
        N-MNIST: :func:`~snn_robust.certificates.event_certified_error` over every recording
        within ``k`` flipped events of the whole recording, per ``k`` in ``event_flips``,
        sharded and combined like the certified error."""
        from snn_robust.certificates import coding_certificate_summary, event_certified_error

        c = self.c
        p = c.profile
        steps = min(p.certify_steps)

        def compute() -> dict[str, Any]:
            n = self._ball_samples()
            out: dict[str, Any] = {"method": p.ball_method, "steps": steps, "samples": n}
            if c.recipe.coding == "spike":
                out["event_l0"] = {str(k): distributed.combine_errors(event_certified_error(
                    net, self._test_share(n), k, steps=steps, method=p.ball_method,  # type: ignore[arg-type]
                    batch_size=p.eval_batch)).to_dict() for k in p.event_flips}
            else:
                x, y = self.test_set()
                out["over_codings"] = coding_certificate_summary(
                    net, (x[:n], y[:n]), DigitalLinf(c.recipe.train_eps), p.coding_maps, p.coding_confidence,
                    steps=steps, method=p.ball_method, seed=0, batch_size=p.eval_batch)  # type: ignore[arg-type]
            return out

        return self._stage(f"ball-{tag}", c.out / "eval" / f"{tag}-ball.json", compute)

    def bound_loss(self, tag: str, net: SpikingNetwork, steps: int) -> dict[str, Any]:
        """Mean S-CROWN (CROWN-IBP) loss ``CE(-[0, lb])`` on the test samples at the training
        eps, and the share verified by it, over the profile's seeds."""
        c = self.c

        def compute() -> dict[str, Any]:
            x, y = self.test_set()
            losses, verified = [], []
            for seed in c.profile.seeds:
                gen = torch.Generator(device=c.device).manual_seed(1000 + seed)
                total, ok = 0.0, 0
                for i in range(0, len(y), c.profile.eval_batch):
                    xb, yb = x[i:i + c.profile.eval_batch].to(c.device), y[i:i + c.profile.eval_batch].to(c.device)
                    xb = self.perturbation.coding(steps).batch(xb)  # event frames: time-major
                    with torch.no_grad():
                        # the paper's loss form (Figure 4): scale 1, not the training default
                        loss, m = certified_loss(net, xb, yb, self.perturbation, steps, "crown-ibp", gen,
                                                 bound_scale=1.0, unstable_weight=0.0, reduction="sum",
                                                 return_margins=True)
                    total += float(loss)
                    ok += int((m > 0).all(1).sum())
                losses.append(total / len(y))
                verified.append(ok / len(y))
            return {"steps": steps, "loss": sum(losses) / len(losses), "loss_per_seed": losses,
                    "verified": sum(verified) / len(verified), "seeds": list(c.profile.seeds)}

        return self._stage(f"bound-loss-{tag}-t{steps}", c.out / "eval" / f"{tag}-bound-loss-t{steps}.json", compute)
