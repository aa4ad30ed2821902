"""The recipe plots label both axes of every panel (what is plotted and in which unit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from snn_robust.recipes import report


def _steps(folder: Path) -> None:
    rows = [{"epoch": 0, "step": s, "clean_acc": 0.5 + 0.1 * s, "bound_loss": 2.0 - 0.2 * s, "verified": 0.1 * s,
             "eps": 0.03 * s, "time": float(s)} for s in range(1, 5)]
    folder.mkdir(parents=True)
    (folder / "steps.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    figures: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *args, **kwargs: figures.append(self))
    return figures


def _assert_labelled(fig: Figure) -> None:
    for ax in fig.axes:
        assert ax.get_ylabel(), f"panel {ax.get_title()!r} has no y-axis label"
        # a twin axis (eps on the right) shares the x label of its panel
        assert ax.get_xlabel() or any(o is not ax and o.bbox.bounds == ax.bbox.bounds for o in fig.axes)


def test_training_curves_label_their_axes(tmp_path: Path, saved: list[Figure]) -> None:
    _steps(tmp_path / "robust")
    report._plot_training(tmp_path, tmp_path / "training_curves.png")
    (fig,) = saved
    assert len(fig.axes) == 4  # three panels and the eps twin
    _assert_labelled(fig)


def test_tprime_sweep_labels_its_axes(tmp_path: Path, saved: list[Figure]) -> None:
    _steps(tmp_path / "robust-t3")
    results = {"models": {"natural": {}, "robust-t3": {"tprime": 3, "time_per_epoch_s": 2.5}}}
    report._plot_tprime(results, tmp_path, tmp_path / "tprime_sweep.png")
    (fig,) = saved
    for ax in fig.axes:
        assert ax.get_ylabel(), f"panel {ax.get_title()!r} has no y-axis label"
