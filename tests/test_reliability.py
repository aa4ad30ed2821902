"""Hostile files and broken runs get one clear answer: a pickle payload handed to every loader
and command never runs, and the command line answers damaged files, unusable checkpoints,
unwritable outputs, bad labels and non-finite options with one line and exit code 2."""
from __future__ import annotations

import hashlib
import io
import json
import pathlib
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from conftest import _write_idx
from test_cli import one_error_line
from test_recipes import write_fixture_root

from snn_robust import cli
from snn_robust.fileio import CHECKED_FORMAT, DamagedFileError, load_checked, read_checked
from snn_robust.models import paper_model
from snn_robust.recipes.pipeline import MODEL_FORMAT, ModelFileError, load_model, save_model
from snn_robust.training import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint


class Payload:
    """Unpickling this object creates ``marker`` (a stand-in for any code an attacker runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def hostile_files(marker: Path, fmt: str) -> dict[str, bytes]:
    """Three ways to smuggle the payload: a bare pickle, a torch zip whose record holds it, and
    our own checksummed wrapper (with a correct SHA-256) around such a torch zip."""
    record = {"format": fmt, "arch": "fc", "dataset": "mnist", "state_dict": Payload(marker), "model": Payload(marker)}
    inner = _torch_bytes(record)
    return {
        "pickle": pickle.dumps(Payload(marker)),
        "torch-zip": inner,
        "checked-wrapper": _torch_bytes({"format": CHECKED_FORMAT, "sha256": hashlib.sha256(inner).hexdigest(),
                                         "payload": inner}),
    }


VARIANTS = ("pickle", "torch-zip", "checked-wrapper")


def test_the_payloads_are_live(tmp_path):
    """Sanity: loaded the unsafe way, each payload does create its marker."""
    for name, blob in hostile_files(tmp_path / "m", MODEL_FORMAT).items():
        marker = tmp_path / "m"
        marker.unlink(missing_ok=True)
        obj = pickle.loads(blob) if name == "pickle" else torch.load(io.BytesIO(blob), weights_only=False)
        if name == "checked-wrapper":
            torch.load(io.BytesIO(obj["payload"]), weights_only=False)
        assert marker.exists(), name


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_fixture_root(tmp_path_factory.mktemp("rel-data"), n_train=40, n_test=10, n_nmnist=(1, 1))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("good") / "fc.pt", paper_model("fc", "mnist"), arch="fc", dataset="mnist")


# -- 1. a model file or checkpoint never runs code -----------------------------------------------
LIBRARY_LOADERS: dict[str, Callable[[Path], Any]] = {
    "load_model": load_model,
    "load_checkpoint": load_checkpoint,
    "load_checked": load_checked,
    "read_checked": read_checked,
}
LIBRARY_REFUSAL = {"load_model": ModelFileError}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loader", list(LIBRARY_LOADERS))
def test_library_loaders_never_run_a_payload(tmp_path, loader, variant):
    marker = tmp_path / "pwned"
    path = tmp_path / "file.pt"
    path.write_bytes(hostile_files(marker, MODEL_FORMAT)[variant])
    with pytest.raises(LIBRARY_REFUSAL.get(loader, DamagedFileError), match="refused without running anything"):
        LIBRARY_LOADERS[loader](path)
    assert not marker.exists()


def _hostile_model_argv(path: Path, out: Path, common: list[str]) -> dict[str, list[str]]:
    return {
        "certify": ["certify", "--model", str(path), "--eps", "0.1", *common],
        "attack": ["attack", "--model", str(path), "--eps", "0.1", *common],
        "robust-train --model": ["robust-train", "--model", str(path), "--eps", "0.1", "--out", str(out), *common],
    }


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("command", ["certify", "attack", "robust-train --model"])
def test_commands_reading_a_model_never_run_a_payload(tmp_path, root, capsys, command, variant):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(hostile_files(marker, MODEL_FORMAT)[variant])
    argv = _hostile_model_argv(path, tmp_path / "out.pt", ["--data-root", str(root), "--no-verify-data"])[command]
    assert cli.main(["-q", *argv]) == 2
    line = one_error_line(capsys)
    assert "--model" in line and "refused without running anything" in line
    assert not marker.exists()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("command", ["train", "robust-train"])
def test_resuming_from_a_hostile_checkpoint_never_runs_it(tmp_path, root, model_file, capsys, command, variant):
    """``last.pt`` in the run folder replaced by a payload: refused (and no previous.pt to
    fall back to), one line, nothing run."""
    marker = tmp_path / "pwned"
    out = tmp_path / "m.pt"
    (tmp_path / "m_run").mkdir()
    (tmp_path / "m_run" / "last.pt").write_bytes(hostile_files(marker, str(CHECKPOINT_FORMAT))[variant])
    common = ["--data-root", str(root), "--no-verify-data", "--device", "cpu", "--train-samples", "20",
              "--epochs", "1", "--batch-size", "20", "--out", str(out)]
    if command == "train":
        argv = ["train", "--dataset", "mnist", "--arch", "fc", *common]
    else:
        argv = ["robust-train", "--model", str(model_file), "--eps", "0.1", "--settings", "quick", *common]
    assert cli.main(["-q", *argv]) == 2
    line = one_error_line(capsys)
    assert "cannot resume" in line and "refused without running anything" in line
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_recipe_rerun_with_a_replaced_stage_model_never_runs_it(tmp_path, root, capsys, variant):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    (out / "natural").mkdir(parents=True)
    (out / "natural" / "model.pt").write_bytes(hostile_files(marker, MODEL_FORMAT)[variant])
    (out / "natural" / "stage.json").write_text(json.dumps({"stage": "natural", "wall_s": 1.0}))
    argv = ["-q", "recipe", "mnist-fc", "--profile", "smoke", "--out", str(out), "--data-root", str(root),
            "--no-verify-data", "--device", "cpu"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert "stage natural" in line and "refused without running anything" in line and "to redo that stage" in line
    assert not marker.exists()


# -- 2. the command line: one line and exit 2 ------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "-inf"])
def test_non_finite_or_non_positive_numeric_options_are_refused(capsys, value):
    for argv in (["train", "--dataset", "mnist", "--arch", "fc", "--out", "m.pt", "--lr", value],
                 ["robust-train", "--model", "m.pt", "--eps", "0.1", "--out", "r.pt", "--lr", value]):
        assert cli.main(argv) == 2
        assert "--lr" in one_error_line(capsys)
    if value != "0":  # 0 epochs of ramp or hold are legal
        for option in ("--ramp-epochs", "--hold-epochs"):
            assert cli.main(["robust-train", "--model", "m.pt", "--eps", "0.1", "--out", "r.pt", option, value]) == 2
            assert option in one_error_line(capsys)
    assert cli.main(["certify", "--model", "m.pt", "--eps", value if value != "0" else "nan"]) == 2
    assert "eps" in one_error_line(capsys)


def test_unwritable_outputs_are_refused_before_any_computing(tmp_path, root, model_file, capsys, monkeypatch):
    from snn_robust.recipes import pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("computed before checking the output path")

    monkeypatch.setattr(pipeline, "load_test_set", must_not_run)
    monkeypatch.setattr(pipeline, "load_train_set", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    common = ["--data-root", str(root), "--no-verify-data"]
    cases = [
        (["certify", "--model", str(model_file), "--eps", "0.1", "--json", str(blocker / "c.json"), *common], "--json"),
        (["attack", "--model", str(model_file), "--eps", "0.1", "--json", str(blocker / "a.json"), *common], "--json"),
        (["train", "--dataset", "mnist", "--arch", "fc", "--out", str(blocker / "m.pt"), *common], "--out"),
        (["robust-train", "--model", str(model_file), "--eps", "0.1", "--out", str(blocker / "r.pt"), *common], "--out"),
        (["recipe", "mnist-fc", "--profile", "smoke", "--out", str(blocker / "run"), *common], "--out"),
        (["certify", "--model", str(model_file), "--eps", "0.1", "--json", str(tmp_path), *common], "is a folder"),
    ]
    for argv, needle in cases:
        assert cli.main(["-q", *argv]) == 2, argv
        line = one_error_line(capsys)
        assert needle in line and ("cannot be written" in line or "is a folder" in line), line


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_last_checkpoint_without_a_previous_one_is_one_line(tmp_path, root, capsys, damage):
    argv = ["-q", "train", "--dataset", "mnist", "--arch", "fc", "--epochs", "1", "--batch-size", "20",
            "--train-samples", "20", "--out", str(tmp_path / "m.pt"), "--data-root", str(root), "--no-verify-data",
            "--device", "cpu"]
    assert cli.main(argv) == 0
    last = tmp_path / "m_run" / "last.pt"
    assert not (tmp_path / "m_run" / "previous.pt").exists()  # one step: one checkpoint
    last.write_bytes(b"" if damage == "empty" else last.read_bytes()[:100])
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert "cannot resume" in line and "last.pt" in line and "start over" in line


def test_a_rerun_with_a_changed_config_is_one_line(tmp_path, root, capsys):
    argv = ["-q", "train", "--dataset", "mnist", "--arch", "fc", "--epochs", "1", "--batch-size", "20",
            "--train-samples", "20", "--out", str(tmp_path / "m.pt"), "--data-root", str(root), "--no-verify-data",
            "--device", "cpu", "--optimizer", "adam", "--lr", "0.001"]
    assert cli.main(argv) == 0
    assert cli.main([*argv[:-1], "0.002"]) == 2
    assert "different config (lr: checkpoint 0.001, now 0.002" in one_error_line(capsys)


def test_a_corrupted_stage_model_is_one_line(tmp_path, root, capsys, model_file):
    out = tmp_path / "run"
    (out / "natural").mkdir(parents=True)
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x40
    (out / "natural" / "model.pt").write_bytes(bytes(data))
    (out / "natural" / "stage.json").write_text(json.dumps({"stage": "natural", "wall_s": 1.0}))
    argv = ["-q", "recipe", "mnist-fc", "--profile", "smoke", "--out", str(out), "--data-root", str(root),
            "--no-verify-data", "--device", "cpu"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert "stage natural" in line and "damaged" in line


def test_labels_out_of_range_are_one_line_even_without_verification(tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        labels = np.arange(n) % 10
        labels[3] = 11  # not a digit
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    argv = ["-q", "train", "--dataset", "mnist", "--arch", "fc", "--epochs", "1", "--out", str(tmp_path / "m.pt"),
            "--data-root", str(tmp_path), "--no-verify-data", "--device", "cpu"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert "train-labels-idx1-ubyte" in line and "labels must be in 0..9, found 0..11" in line


def test_a_damaged_model_file_is_one_line(tmp_path, model_file, capsys):
    path = tmp_path / "m.pt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert cli.main(["certify", "--model", str(path), "--eps", "0.1"]) == 2
    assert "damaged" in one_error_line(capsys)


def test_library_resume_from_a_hostile_checkpoint_is_a_checkpoint_error(tmp_path):
    from test_training import run

    marker = tmp_path / "pwned"
    (tmp_path / "last.pt").write_bytes(hostile_files(marker, str(CHECKPOINT_FORMAT))["torch-zip"])
    with pytest.raises(CheckpointError, match="refused without running anything"):
        run(tmp_path, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["config.json", "natural/stage.json"])
def test_a_damaged_run_record_in_a_recipe_folder_is_one_line(tmp_path, root, model_file, capsys, name):
    out = tmp_path / "run"
    (out / "natural").mkdir(parents=True)
    (out / "natural" / "model.pt").write_bytes(model_file.read_bytes())
    (out / "natural" / "stage.json").write_text(json.dumps({"stage": "natural", "wall_s": 1.0}))
    (out / name).write_text('{"config": {"recipe": ')  # cut off mid-write by something else
    argv = ["-q", "recipe", "mnist-fc", "--profile", "smoke", "--out", str(out), "--data-root", str(root),
            "--no-verify-data", "--device", "cpu"]
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert name.split("/")[-1] in line and "is damaged" in line and "delete it" in line


# -- 4. N-MNIST recordings are verified ----------------------------------------------------------
def test_the_shipped_nmnist_table_is_intact():
    from snn_robust import nmnist_manifest

    assert hashlib.sha256(nmnist_manifest._TABLE.encode()).hexdigest() == nmnist_manifest.TABLE_SHA256
    assert len(nmnist_manifest.RECORDINGS) == 1100
    assert sum(k.startswith("Test/") for k in nmnist_manifest.RECORDINGS) == 100
    assert all(size % 5 == 0 and len(sha) == 64 for size, sha in nmnist_manifest.RECORDINGS.values())


@pytest.fixture
def known_recording(tmp_path, write_nmnist_bin, monkeypatch):
    """A fixture recording registered as a known one (its size and SHA-256 in the table)."""
    from snn_robust import data

    path = write_nmnist_bin(tmp_path / "NMNIST" / "Train" / "7" / "00042.bin",
                            [(x, (3 * x) % 34, 1000 * x, x % 2) for x in range(30)])
    content = path.read_bytes()
    monkeypatch.setattr(data.nmnist_frames, "_known_recordings",
                        lambda: {"Train/7/00042.bin": (len(content), hashlib.sha256(content).hexdigest())})
    return path


def test_fetch_nmnist_verifies_known_recordings_and_refuses_a_damaged_one(tmp_path, known_recording, write_nmnist_bin,
                                                                          capsys):
    write_nmnist_bin(tmp_path / "NMNIST" / "Test" / "1" / "7.bin", [(1, 1, 0, 0), (2, 2, 10, 1)])
    assert cli.main(["data", "fetch", "nmnist", "--data-root", str(tmp_path)]) == 0
    assert "1 SHA-256 verified, 1 checked for format only" in capsys.readouterr().out
    good = known_recording.read_bytes()
    for damaged in (good[:10] + bytes([good[10] ^ 0x01]) + good[11:],  # one flipped bit, same size
                    good[:-5],  # a whole event missing: still a multiple of 5 bytes
                    good + good[:5]):
        known_recording.write_bytes(damaged)
        assert cli.main(["data", "fetch", "nmnist", "--data-root", str(tmp_path)]) == 2
        line = one_error_line(capsys)
        assert "00042.bin is damaged" in line and "Train/7/00042.bin" in line


def test_nmnist_frames_check_each_recording_when_read(known_recording):
    from snn_robust import data

    folder = known_recording.parent.parent.parent
    assert data.NMNISTFrames(folder, train=True, steps=2)[0][1] == 7
    good = known_recording.read_bytes()
    known_recording.write_bytes(good[:24] + bytes([good[24] ^ 0x01]) + good[25:])  # one timestamp bit
    with pytest.raises(data.ChecksumError, match="00042.bin is damaged"):
        data.NMNISTFrames(folder, train=True, steps=2)[0]
    assert data.NMNISTFrames(folder, train=True, steps=2, verify=False)[0][1] == 7  # your own files


@pytest.mark.parametrize("content, needle", [
    (b"", "not a whole, non-zero number"),
    (bytes([1, 1, 0, 0, 5, 2]), "not a whole, non-zero number"),
    (bytes([40, 1, 0, 0, 5]), "outside the 34x34 sensor"),
    (bytes([1, 34, 0, 0, 5]), "outside the 34x34 sensor"),
])
def test_unknown_nmnist_recordings_get_format_checks(tmp_path, content, needle):
    from snn_robust import data

    path = tmp_path / "Train" / "3" / "123456.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(data.ChecksumError, match=needle):
        data.check_nmnist_recording(path, "Train/3/123456.bin")
    path.write_bytes(bytes([1, 240, 0, 0, 5, 2, 3, 0, 0, 9]))  # an overflow marker (y = 240) is legal
    assert data.check_nmnist_recording(path, "Train/3/123456.bin") is False


def test_every_load_in_the_package_is_weights_only():
    """A source guard for the promise above: every ``torch.load`` in the package (the one
    call is in snn_robust/fileio.py) passes ``weights_only=True``; nothing unpickles otherwise."""
    import re

    repo = Path(__file__).resolve().parent.parent
    calls = []
    for folder in ("snn_robust", "recipes", "adapters", "benchmarks", "scripts"):
        for path in sorted((repo / folder).rglob("*.py")):
            text = path.read_text()
            assert not re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False\)", text), path
            for match in re.finditer(r"torch\.load\(([^()]*)\)", text):
                calls.append((path.relative_to(repo).as_posix(), match.group(1)))
    assert calls, "the scan found no torch.load at all: the pattern is stale"
    assert all("weights_only=True" in args for _, args in calls), calls
    assert "snn_robust/fileio.py" in {p for p, _ in calls}
