"""Recipes: every recipe end to end in the smoke profile on small real-format fixture data,
the results.json schema, results.md and plots, resumption, the eps search and model files."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _write_idx, _write_nmnist_bin

from snn_robust.models import paper_model
from snn_robust.recipes import (
    PROFILES,
    RECIPES,
    RecipeConfigError,
    get_profile,
    get_recipe,
    load_model,
    run_recipe,
    save_model,
)
from snn_robust.recipes.pipeline import search_eps
from snn_robust.recipes.report import PLOTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixture data in the real formats ------------------------------------------------------------
def _images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic digits: class c lights a 6x6 block at a class-specific place, plus noise."""
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    x = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = 3 + 6 * (c // 4), 3 + 6 * (c % 4)
        x[i, r:r + 6, col:col + 6] = 230
    return x, labels.astype(np.uint8)


def write_fixture_root(root: Path, n_train: int = 200, n_test: int = 40, n_nmnist: tuple[int, int] = (8, 3)) -> Path:
    """MNIST and Fashion-MNIST IDX files and an N-MNIST ``Train``/``Test`` tree of ``.bin``
    recordings (``n_nmnist`` per class) under ``root``."""
    rng = np.random.default_rng(0)
    for folder in ("MNIST", "FashionMNIST"):
        raw = root / folder / "raw"
        for split, n in (("train", n_train), ("t10k", n_test)):
            x, y = _images(rng, n)
            _write_idx(raw / f"{split}-images-idx3-ubyte", x)
            _write_idx(raw / f"{split}-labels-idx1-ubyte", y)
    for split, per_class in (("Train", n_nmnist[0]), ("Test", n_nmnist[1])):
        for c in range(10):
            for k in range(per_class):
                events = []
                for t in range(0, 300_000, 3000):
                    for _ in range(4):
                        x = int(rng.integers(3 * c, 3 * c + 4))
                        y = int(rng.integers(0, 34))
                        events.append((x, y, t, int(rng.integers(0, 2))))
                _write_nmnist_bin(root / "NMNIST" / split / str(c) / f"{k:05d}.bin", events)
    return root


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixture_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def smoke_runs(fixture_root, tmp_path_factory) -> dict[str, tuple[Path, dict, float]]:
    """Every recipe once in the smoke profile: name -> (run folder, results, seconds)."""
    runs = {}
    base = tmp_path_factory.mktemp("runs")
    for name in RECIPES:
        out = base / f"{name}-smoke"
        t0 = time.perf_counter()
        results = run_recipe(get_recipe(name), get_profile("smoke"), out, data_root=fixture_root,
                             device="cpu", seed=0, verify_data=False, progress=False)
        runs[name] = (out, results, time.perf_counter() - t0)
    return runs


# -- results.json schema -----------------------------------------------------------------------
def _check_error(r: dict, n: int | None = None) -> None:
    assert set(r) >= {"error", "std", "per_seed", "seeds", "num_samples", "details"}
    assert 0.0 <= r["error"] <= 1.0 and r["std"] >= 0.0
    assert all(0.0 <= e <= 1.0 for e in r["per_seed"]) and r["per_seed"]
    if n is not None:
        assert r["num_samples"] == n


def check_results_schema(results: dict) -> None:
    """What every results.json must hold (shared with the CLI tests)."""
    assert results["schema"] == "snn-robust-recipe-results/1"
    assert results["recipe"] in RECIPES and results["profile"] in PROFILES
    cfg = results["config"]
    assert set(cfg) >= {"recipe", "profile", "arch", "seed", "natural_training", "robust_training", "perturbation"}
    assert set(results["environment"]) >= {"python", "torch", "numpy", "snn_robust"}
    assert set(results["hardware"]) >= {"cpu", "cpu_count", "torch_threads", "device", "gpu"}
    assert results["stages"] and all(s["status"] in ("ran", "cached") and s["wall_s"] >= 0
                                     for s in results["stages"].values())
    assert results["wall_s"]["all_stages"] >= 0
    models = results["models"]
    recipe = RECIPES[results["recipe"]]
    if recipe.kind == "table":
        assert set(models) == {"natural", "robust"}
        assert results["paper"]["table2"] and results["paper"]["clean_acc_percent"] > 0
        for tag, m in models.items():
            n = m["clean_error"]["num_samples"]
            _check_error(m["clean_error"])
            assert len(m["attack"]) == 2
            assert sorted(a["role"] for a in m["attack"].values()) == ["paper", "reference"]
            for name, a in m["attack"].items():
                assert len(a["eps"]) == len(a["errors"]) == len(a["sources"]) == 8
                assert a["eps"][:4] == list(recipe.attack_eps)
                assert a["sources"][:4] == ["paper"] * 4
                _check_error(a["clean"], n)
                for e, r in zip(a["eps"], a["errors"]):
                    _check_error(r, n)
                    assert r["error"] >= a["clean"]["error"] - 1e-9  # attack error counts clean errors too
                assert a["eps"][4:] == results["eps_search"][name]["eps"]
            cert = m["certified"]
            assert cert["eps"] == recipe.train_eps
            assert set(cert["methods"]) == {"ibp", "crown-ibp", "best"}
            steps = {str(t) for t in cfg["profile"]["certify_steps"]}
            cert_n = min(n, cfg["profile"]["certify_samples"] or n)
            for method, by_t in cert["methods"].items():
                assert set(by_t) == steps
                for r in by_t.values():
                    _check_error(r, cert_n)
            for t in steps:  # best is the tightest, so never less verified
                best = cert["methods"]["best"][t]["error"]
                assert best <= min(cert["methods"]["ibp"][t]["error"], cert["methods"]["crown-ibp"][t]["error"]) + 1e-9
            check_ball_certificate(m["ball_certificate"], recipe, cfg["profile"], n)
    else:
        assert set(models) == {"natural"} | {f"robust-t{t}" for t in recipe.tprimes}
        for tag, m in models.items():
            _check_error(m["clean_error"])
            assert math.isfinite(m["bound_loss"]["loss"]) and 0 <= m["bound_loss"]["verified"] <= 1
            # Figure 4's loss is the paper's CE(-[0, lb]) at scale 1 (not the training default 2):
            # with 10 classes and margins in [-1, 1] it lies in [log(1 + 9/e), log(1 + 9e)]
            assert math.log(1 + 9 / math.e) - 1e-6 <= m["bound_loss"]["loss"] <= math.log(1 + 9 * math.e) + 1e-6
            if tag != "natural":
                assert m["time_per_epoch_s"] > 0
    json.dumps(results)  # JSON-serialisable


def check_ball_certificate(ball: dict, recipe, profile: dict, n_test: int) -> None:
    """The stronger certificates of a table recipe: sized by the profile, in range, and
    consistent (a Clopper-Pearson lower bound never exceeds the share of maps certified)."""
    n = min(n_test, profile["ball_samples"] or profile["certify_samples"] or n_test)
    assert ball["samples"] == n and ball["method"] == profile["ball_method"]
    assert ball["steps"] == min(profile["certify_steps"])
    if recipe.coding == "spike":
        assert "over_codings" not in ball
        assert list(ball["event_l0"]) == [str(k) for k in profile["event_flips"]]
        for k, r in ball["event_l0"].items():
            _check_error(r, n)
            assert r["details"]["k"] == int(k) and r["details"]["per_step"] is False
        return
    assert "event_l0" not in ball
    oc = ball["over_codings"]
    maps = profile["coding_maps"]
    assert (oc["n_maps"], oc["confidence"], oc["num_samples"]) == (maps, profile["coding_confidence"], n)
    assert oc["eps"] == recipe.train_eps and oc["steps"] == ball["steps"]
    assert len(oc["certified"]) == len(oc["lower"]) == n
    assert all(0 <= k <= maps for k in oc["certified"])
    for k, low in zip(oc["certified"], oc["lower"]):
        assert 0.0 <= low <= k / maps + 1e-12 and (low > 0) == (k > 0)
    assert math.isclose(oc["certified_share"], sum(oc["certified"]) / (maps * n))
    assert math.isclose(oc["mean_lower"], sum(oc["lower"]) / n)
    assert oc["mean_lower"] <= oc["certified_share"] + 1e-12
    assert math.isclose(oc["share_above_half"], sum(low > 0.5 for low in oc["lower"]) / n)


# -- end to end --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_runs_end_to_end_in_smoke_profile(smoke_runs, name):
    # no wall-time assertion here (timings belong in benchmarks/; CI's own limit catches a slow profile)
    out, results, _seconds = smoke_runs[name]
    on_disk = json.loads((out / "results.json").read_text())
    check_results_schema(on_disk)
    assert on_disk["config"] == json.loads((out / "config.json").read_text())["config"]
    md = (out / "results.md").read_text()
    assert f"Recipe `{name}`" in md and "Hardware:" in md and "Versions:" in md
    kind = RECIPES[name].kind
    if kind == "table":
        assert "Table 1" in md and "Table 2" in md and "Certified" in md and "paper:" in md
        ball = on_disk["models"]["robust"]["ball_certificate"]
        if RECIPES[name].coding == "spike":
            assert "whole l_0 ball" in md and f"| robust | " in md
            assert f"{100 * ball['event_l0']['1']['error']:.1f}%" in md
        else:
            assert "over the coding randomness" in md and "`p_L > 1/2`" in md
            assert f"{100 * ball['over_codings']['mean_lower']:.1f}%" in md
    else:
        assert "Figure 4" in md
    for png in PLOTS[kind]:
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, png
    # every run writes its config and versions beside the models
    for model_dir in [p for p in out.iterdir() if (p / "model.pt").exists()]:
        assert (model_dir / "config.json").exists() and (model_dir / "metrics.csv").exists()


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_recomputes_a_deleted_one(smoke_runs, fixture_root):
    out, _, _ = smoke_runs["mnist-fc"]
    keep = [out / "natural" / "model.pt", out / "robust" / "model.pt", out / "eval" / "natural-certify.json",
            out / "eval" / "search-eot-pgd.json", out / "eval" / "robust-attack-eot-pgd.json"]
    before = {p: p.stat().st_mtime_ns for p in keep}
    deleted = out / "eval" / "robust-certify.json"
    deleted.unlink()
    results = run_recipe(get_recipe("mnist-fc"), get_profile("smoke"), out, data_root=fixture_root,
                         device="cpu", seed=0, verify_data=False, progress=False)
    assert deleted.exists()
    assert {p: p.stat().st_mtime_ns for p in keep} == before
    status = {k: v["status"] for k, v in results["stages"].items()}
    assert status.pop("certify-robust") == "ran" and "ball-robust" in status
    assert set(status.values()) == {"cached"}
    check_results_schema(results)


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_checkpoint(smoke_runs, fixture_root, tmp_path):
    """A run folder holding only the natural stage's checkpoint (no model.pt yet) continues it."""
    src, _, _ = smoke_runs["mnist-fc"]
    out = tmp_path / "run"
    (out / "natural").mkdir(parents=True)
    for f in ("last.pt", "metrics.csv", "metrics.jsonl", "steps.csv", "steps.jsonl"):
        (out / "natural" / f).write_bytes((src / "natural" / f).read_bytes())
    (out / "config.json").write_bytes((src / "config.json").read_bytes())
    from snn_robust.recipes.pipeline import RecipeRun

    run = RecipeRun(get_recipe("mnist-fc"), get_profile("smoke"), out, data_root=fixture_root, verify_data=False,
                    progress=False)
    run._check_config()
    net = run.natural_model()
    ref, _ = load_model(src / "natural" / "model.pt")
    # the checkpoint is at the end of the only epoch: resuming trains nothing more, same weights
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


def test_other_configuration_in_the_same_folder_is_refused(tmp_path, fixture_root):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {"recipe": "something else"}}))
    with pytest.raises(RecipeConfigError, match="different configuration"):
        run_recipe(get_recipe("mnist-fc"), get_profile("smoke"), out, data_root=fixture_root, verify_data=False,
                   progress=False)


def check_ball_certificate_at_eps_zero(run_folder: Path, name: str, data_root: Path, out: Path) -> dict:
    """The smoke robust model's ball certificate at eps 0 (``k`` = 0 and 1 flips): there
    the bounds are exact, so samples are certified and the consistency checks bite."""
    import dataclasses

    from snn_robust.recipes.pipeline import RecipeRun

    recipe = dataclasses.replace(get_recipe(name), train_eps=0.0)
    profile = dataclasses.replace(get_profile("smoke"), event_flips=(0, 1), coding_maps=6, ball_samples=12)
    run = RecipeRun(recipe, profile, out, data_root=data_root, verify_data=False, progress=False)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    net, _ = load_model(run_folder / "robust" / "model.pt")
    ball = run.ball_certificate("robust", net)
    check_ball_certificate(ball, recipe, run.c.profile.to_dict(), len(run.test_set()[1]))
    if recipe.coding == "spike":
        # certified for every recording within one flip implies certified at the recording
        assert ball["event_l0"]["0"]["error"] <= ball["event_l0"]["1"]["error"]
        assert ball["event_l0"]["0"]["error"] < 1.0
    else:
        assert ball["over_codings"]["certified_share"] > 0 and ball["over_codings"]["mean_lower"] > 0
    return ball


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist-fc", "nmnist-fc"])
def test_ball_certificates_at_eps_zero_are_consistent(smoke_runs, fixture_root, tmp_path, name):
    check_ball_certificate_at_eps_zero(smoke_runs[name][0], name, fixture_root, tmp_path)


def test_config_from_before_the_ball_certificates_is_accepted_and_updated(tmp_path):
    from snn_robust.recipes.pipeline import _LATER_PROFILE_FIELDS, RecipeRun

    run = RecipeRun(get_recipe("mnist-fc"), get_profile("smoke"), tmp_path)
    old = json.loads(json.dumps(run.config()))
    for key in _LATER_PROFILE_FIELDS:
        old["profile"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps({"config": old}))
    run._check_config()  # a folder made before the fields existed continues
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert saved["profile"]["coding_maps"] == get_profile("smoke").coding_maps
    saved["profile"]["coding_maps"] += 1  # once recorded, a different value is a different run
    (tmp_path / "config.json").write_text(json.dumps({"config": saved}))
    with pytest.raises(RecipeConfigError, match="different configuration"):
        run._check_config()


# -- pieces --------------------------------------------------------------------------------------
def test_eps_search_brackets_each_target_on_a_monotone_curve():
    calls = []

    def error_at(e):
        calls.append(e)
        return min(1.0, 2.0 * e)

    res = search_eps(error_at, (0.2, 0.3, 0.4, 0.5), hi=0.1, iters=6)
    assert res["targets"] == [0.2, 0.3, 0.4, 0.5]
    for target, e, err in zip(res["targets"], res["eps"], res["errors"]):
        assert abs(err - target) <= 2 * 0.4 / 2 ** 6 + 1e-9
        assert err == min(1.0, 2.0 * e)
    assert len(calls) == len(set(calls)) == len(res["evaluated"])  # every eps evaluated once


def test_eps_search_grows_the_bracket_and_stops_at_max():
    res = search_eps(lambda e: 0.1, (0.2, 0.5), hi=0.25, iters=2, max_hi=1.0)
    assert max(e for e, _ in res["evaluated"]) == 1.0


def test_recipes_hold_the_paper_settings():
    assert {n for n, r in RECIPES.items() if r.kind == "table"} == {
        f"{d}-{a}" for d in ("mnist", "fmnist", "nmnist") for a in ("fc", "conv")}
    assert RECIPES["mnist-fc"].attack_eps == (0.104, 0.124, 0.140, 0.154)
    assert RECIPES["nmnist-conv"].attack_eps == (0.0008, 0.0010, 0.0012, 0.0015)
    assert [RECIPES[f"fmnist-{a}"].train_eps for a in ("fc", "conv")] == [0.01, 0.005]
    assert RECIPES["nmnist-fc"].coding == "spike" and RECIPES["fmnist-fc"].coding == "rate"
    assert RECIPES["tprime-sweep"].tprimes == (1, 3, 5)
    paper = PROFILES["paper"]
    run_cfg = __import__("snn_robust.recipes.pipeline", fromlist=["RecipeRun"]).RecipeRun(
        RECIPES["mnist-conv"], paper, "unused").config()
    assert run_cfg["natural_training"]["epochs"] == 80 and run_cfg["natural_training"]["optimizer"] == "sgd"
    rob = run_cfg["robust_training"]
    assert (rob["epochs"], rob["lr"], rob["clip_norm"], rob["method"], rob["bound_steps"]) == (300, 5e-4, 0.25, "crown-ibp", 3)
    assert RECIPES["tprime-sweep"].arch_for(paper) == "conv" and RECIPES["tprime-sweep"].arch_for(PROFILES["quick"]) == "fc"


def test_profile_overrides_apply_per_recipe():
    quick = PROFILES["quick"]
    conv = quick.for_recipe(RECIPES["mnist-conv"])
    assert conv.n_test == 100 and conv.n_train is None and conv.natural["epochs"] == 2 and conv.natural["lr"] == 2e-3
    assert conv.natural["optimizer"] == "adam" and conv.robust["epochs"] == 1
    nm = quick.for_recipe(RECIPES["nmnist-fc"])
    assert nm.natural["epochs"] == 80 and nm.natural["lr_milestones"] == () and nm.n_test == 300
    assert (nm.natural["optimizer"], nm.natural["lr"]) == ("adam", 1e-3)   # Adam 2e-3 did not train on N-MNIST
    fm = quick.for_recipe(RECIPES["fmnist-fc"])
    assert fm.natural["epochs"] == 8 and quick.for_recipe(RECIPES["mnist-fc"]).natural["epochs"] == 3
    fc = quick.for_recipe(RECIPES["fmnist-conv"])  # its own entry overrides CONV's, which overrides Fashion-MNIST's
    assert (fc.natural["epochs"], fc.natural["batch_size"], fc.robust["batch_size"]) == (5, 64, 64)
    assert "batch_size" not in conv.natural and conv.robust["batch_size"] == 64
    assert quick.for_recipe(RECIPES["mnist-fc"]).robust.get("batch_size", 128) == 128
    nc = quick.for_recipe(RECIPES["nmnist-conv"])  # N-MNIST's epochs (1000 recordings) override CONV's
    assert (nc.natural["epochs"], nc.natural["lr"], nc.robust["epochs"], nc.robust["bound_steps"]) == (80, 1e-3, 20, 3)
    assert nc.robust["batch_size"] == 128 and nc.fmnist_conv == {}
    assert nc.n_test == 100 and nc.attack_iters == 5  # CONV's evaluation budget stays


def test_unknown_names_are_explained():
    with pytest.raises(KeyError, match="known recipes: mnist-fc"):
        get_recipe("cifar-fc")
    with pytest.raises(KeyError, match="known profiles"):
        get_profile("huge")


def test_model_file_round_trip(tmp_path):
    net = paper_model("conv", "nmnist")
    path = save_model(tmp_path / "m.pt", net, arch="conv", dataset="nmnist", note="x")
    loaded, info = load_model(path)
    assert info["arch"] == "conv" and info["dataset"] == "nmnist" and info["meta"]["note"] == "x"
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    (tmp_path / "other.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable model file"):
        load_model(tmp_path / "other.pt")
    torch.save({"weights": 1}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="not an snn-robust model file"):
        load_model(tmp_path / "dict.pt")
