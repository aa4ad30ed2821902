"""The compute commands of ``snn-robust``: help texts, one-line errors with exit code 2, and
train -> robust-train -> attack / certify -> recipe on small real-format fixture data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_recipes import check_results_schema, write_fixture_root

from snn_robust import cli
from snn_robust.recipes import load_model

COMMANDS = ("train", "robust-train", "attack", "certify", "recipe")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_fixture_root(tmp_path_factory.mktemp("cli-data"), n_train=96, n_test=24, n_nmnist=(2, 1))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snn-robust: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- help ------------------------------------------------------------------------------------------
def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS + ("data",):
        assert name in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help_with_examples(capsys, command):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: snn-robust {command}" in out
    assert "examples:" in out and f"snn-robust {command}" in out.split("examples:")[1]


def test_recipe_help_lists_recipes_and_profiles(capsys):
    assert cli.main(["recipe", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist-fc", "nmnist-conv", "tprime-sweep", "smoke", "quick", "paper"):
        assert name in out


def test_console_script_help():
    exe = Path(sys.executable).with_name("snn-robust")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "snn_robust.cli"]
    proc = subprocess.run(cmd + ["attack", "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--eps" in proc.stdout


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["recipe", "cifar-fc"], "invalid choice: 'cifar-fc'"),
        (["recipe", "mnist-fc", "--profile", "huge"], "--profile"),
        (["recipe", "mnist-fc", "--data-root", "/nonexistent/folder"], "--data-root /nonexistent/folder is not a folder"),
        (["attack", "--model", "m.pt", "--eps", "-0.1"], "eps must be in [0, 1], got -0.1"),
        (["attack", "--model", "m.pt", "--eps", "1.5"], "eps must be in [0, 1], got 1.5"),
        (["certify", "--model", "m.pt", "--eps", "abc"], "eps must be a number"),
        (["robust-train", "--model", "m.pt", "--eps", "2", "--out", "r.pt"], "eps must be in [0, 1]"),
        (["attack", "--model", "/nonexistent/model.pt", "--eps", "0.1"], "model file /nonexistent/model.pt does not exist"),
        (["certify", "--model", "/nonexistent/model.pt", "--eps", "0.1"], "does not exist"),
        (["train", "--dataset", "cifar", "--arch", "fc", "--out", "m.pt"], "invalid choice: 'cifar'"),
        (["train", "--dataset", "mnist", "--arch", "fc", "--out", "m.pt", "--epochs", "0"], "positive integer"),
        (["train", "--dataset", "mnist", "--arch", "mlp", "--out", "m.pt"], "--arch"),
        (["attack", "--eps", "0.1"], "--model"),
        (["recipe", "mnist-fc", "--device", "tpu"], "--device"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, needle):
    assert cli.main(argv) == 2
    assert needle in one_error_line(capsys)


def test_a_file_that_is_not_a_model_is_refused(tmp_path, capsys):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    assert cli.main(["certify", "--model", str(bad), "--eps", "0.1"]) == 2
    assert "not a readable model file" in one_error_line(capsys)
    torch.save({"a": 1}, bad)
    assert cli.main(["attack", "--model", str(bad), "--eps", "0.1"]) == 2
    assert "not an snn-robust model file" in one_error_line(capsys)


def test_recipe_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(["recipe", "mnist-fc", "--profile", "smoke", "--out", str(f)]) == 2
    assert "is a file" in one_error_line(capsys)


def test_missing_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    from snn_robust import data

    monkeypatch.setattr(data.fetching, "_SOURCES", {name: (lambda spec, tmp: (_ for _ in ()).throw(RuntimeError("offline")))
                                            for name in data.fetching._SOURCES})
    assert cli.main(["-q", "train", "--dataset", "mnist", "--arch", "fc", "--out", str(tmp_path / "m.pt"),
                     "--data-root", str(tmp_path)]) == 2
    assert "MNIST" in one_error_line(capsys)


# -- end to end on fixtures --------------------------------------------------------------------------
@pytest.mark.slow
def test_train_robust_train_attack_certify(tmp_path, root, capsys):
    common = ["--data-root", str(root), "--no-verify-data"]
    nat = tmp_path / "fc.pt"
    assert cli.main(["-q", "--device", "cpu", "train", "--dataset", "mnist", "--arch", "fc", "--epochs", "1",
                     "--batch-size", "32", "--optimizer", "adam", "--lr", "1e-3", "--train-samples", "64",
                     "--out", str(nat), *common]) == 0
    net, info = load_model(nat)
    assert (info["arch"], info["dataset"]) == ("fc", "mnist")
    assert (tmp_path / "fc_run" / "metrics.csv").exists() and (tmp_path / "fc_run" / "last.pt").exists()

    rob = tmp_path / "fc-robust.pt"
    assert cli.main(["-q", "robust-train", "--model", str(nat), "--eps", "0.12", "--settings", "quick", "--epochs", "1",
                     "--batch-size", "32", "--train-samples", "64", "--out", str(rob), "--seed", "3", *common]) == 0
    _, rinfo = load_model(rob)
    assert rinfo["meta"]["train_config"]["robust"] and rinfo["meta"]["train_config"]["seed"] == 3
    assert rinfo["meta"]["train_config"]["method"] == "ibp"
    capsys.readouterr()

    out_json = tmp_path / "attack.json"
    assert cli.main(["-q", "attack", "--model", str(rob), "--eps", "0.05", "0.1", "--samples", "8", "--iters", "2",
                     "--seeds", "1", "--attack", "reference", "--json", str(out_json), *common]) == 0
    printed = capsys.readouterr().out
    assert "eot-pgd" in printed and "eps 0.05" in printed and "eps 0.1" in printed
    res = json.loads(out_json.read_text())
    assert res["eps"] == [0.05, 0.1] and res["attack"]["name"] == "EOTPGD" and res["clean"]["num_samples"] == 8

    cert_json = tmp_path / "cert.json"
    assert cli.main(["-q", "certify", "--model", str(rob), "--eps", "0.12", "--method", "ibp", "best", "--tprime", "3",
                     "--samples", "8", "--seeds", "1", "--json", str(cert_json), *common]) == 0
    printed = capsys.readouterr().out
    assert "ibp" in printed and "best" in printed and "T'=3" in printed
    cert = json.loads(cert_json.read_text())
    assert [c["details"]["method"] for c in cert["certified"]] == ["ibp", "best"]
    assert cert["certified"][1]["error"] <= cert["certified"][0]["error"]


@pytest.mark.slow
def test_attack_on_spike_data_and_wrong_attack_name(tmp_path, root, capsys):
    common = ["--data-root", str(root), "--no-verify-data"]
    model = tmp_path / "nm.pt"
    assert cli.main(["-q", "train", "--dataset", "nmnist", "--arch", "fc", "--epochs", "1", "--batch-size", "10",
                     "--out", str(model), *common]) == 0
    assert cli.main(["-q", "attack", "--model", str(model), "--eps", "0.001", "--samples", "4", "--iters", "1",
                     "--seeds", "1", *common]) == 0
    assert "spike-compatible" in capsys.readouterr().out
    assert cli.main(["attack", "--model", str(model), "--eps", "0.001", "--attack", "eot-pgd", *common]) == 2
    assert "does not apply to nmnist" in one_error_line(capsys)


@pytest.mark.slow
def test_recipe_command_runs_and_resumes(tmp_path, root, capsys):
    out = tmp_path / "run"
    argv = ["-q", "recipe", "tprime-sweep", "--profile", "smoke", "--out", str(out), "--data-root", str(root),
            "--no-verify-data", "--device", "cpu"]
    assert cli.main(argv) == 0
    assert "stage(s) run, 0 reused" in capsys.readouterr().out
    check_results_schema(json.loads((out / "results.json").read_text()))
    assert cli.main(argv) == 0
    assert "0 stage(s) run" in capsys.readouterr().out
    # another seed in the same folder is another configuration
    assert cli.main(argv + ["--seed", "5"]) == 2
    assert "different configuration" in one_error_line(capsys)
