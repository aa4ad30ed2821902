"""The ``snn-robust`` command line: help, one-line user errors, ``data fetch`` on small fixtures."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from snn_robust import cli, data


@pytest.fixture
def no_fetch(monkeypatch):
    def offline(spec, tmp):
        raise RuntimeError("offline (test)")

    monkeypatch.setattr(data.fetching, "_SOURCES", {name: offline for name in data.fetching._SOURCES})


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snn-robust: error: "), err
    return lines[0]


def test_help_lists_data_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: snn-robust" in out and "data" in out and "--device" in out and "--seed" in out
    assert cli.main(["data", "fetch", "--help"]) == 0
    assert "--data-root" in capsys.readouterr().out


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "snn_robust.cli", "data", "fetch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dataset to fetch: mnist, fmnist, nmnist" in proc.stdout


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([], "COMMAND"),
        (["data"], "ACTION"),
        (["data", "fetch", "cifar"], "invalid choice: 'cifar'"),
        (["--device", "tpu", "data", "fetch", "mnist"], "--device"),
        (["--seed", "x", "data", "fetch", "mnist"], "--seed"),
        (["train-everything"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, needle):
    assert cli.main(argv) == 2
    assert needle in one_error_line(capsys)


def test_missing_mnist_is_one_line_naming_the_folder(tmp_path, capsys, no_fetch):
    assert cli.main(["data", "fetch", "mnist", "--data-root", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert str(tmp_path / "MNIST" / "raw") in line and "train-images-idx3-ubyte" in line


def test_fetch_mnist_reports_counts(tmp_path, capsys, write_idx, monkeypatch, no_fetch):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    sums = {}
    for name, shape in [
        ("train-images-idx3-ubyte", (5, 28, 28)),
        ("train-labels-idx1-ubyte", (5,)),
        ("t10k-images-idx3-ubyte", (3, 28, 28)),
        ("t10k-labels-idx1-ubyte", (3,)),
    ]:
        path = write_idx(raw / name, rng.integers(0, 10, shape, dtype=np.uint8))
        sums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)

    assert cli.main(["-q", "data", "fetch", "mnist", "--data-root", str(tmp_path)]) == 0
    assert "5 train, 3 test images" in capsys.readouterr().out

    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    assert cli.main(["data", "fetch", "mnist", "--data-root", str(tmp_path)]) == 2
    assert "t10k-labels-idx1-ubyte" in one_error_line(capsys)


def test_fetch_nmnist(tmp_path, capsys, write_nmnist_bin):
    write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "4" / "1.bin", [(1, 1, 0, 0), (2, 2, 10, 1)])
    assert cli.main(["data", "fetch", "nmnist", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "NMNIST") in out and "train 1" in out and "test missing" in out

    assert cli.main(["data", "fetch", "nmnist", "--data-root", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in one_error_line(capsys)


def test_resolve_device_and_seed():
    assert cli.resolve_device("cpu") == torch.device("cpu")
    assert cli.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(cli.UsageError, match="no CUDA device"):
            cli.resolve_device("cuda")
    cli.seed_everything(3)
    a = torch.rand(3)
    cli.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
