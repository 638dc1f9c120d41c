"""CIFAR readers on tiny files written in the official layout, plus the unpickling and tar safety checks.

The official "python version" batches were pickled by Python 2 (protocol 2, ``str`` keys
that Python 3 reads as ``bytes`` with ``encoding='bytes'``). :func:`py2_pickle` writes that
exact opcode stream by hand, so the reader is tested on the real wire format rather than
on what Python 3's pickler would produce (which is tested too, with ``str`` keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from format_writers import py2_pickle, pystr

from fewstep.data.cifar import SPECS, load_cifar, safe_extract_tar, safe_unpickle
from fewstep.errors import DataFormatError, DatasetNotFoundError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------- fixtures


def make_batch(rng: np.random.Generator, n: int, classes: int) -> tuple[np.ndarray, list[int]]:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(x) for x in rng.integers(0, classes, n)]


def write_cifar10(root: Path, n: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``root/cifar-10-batches-py`` in the official layout, Python-2 pickles with bytes keys."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data, labels = make_batch(rng, n, 10)
        batches[name] = (data, labels)
        (folder / name).write_bytes(py2_pickle({b"batch_label": b"training batch", b"labels": labels, b"data": data,
                                                b"filenames": [b"img_%d.png" % i for i in range(n)]}))
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [c.encode() for c in CIFAR10_NAMES],
                                                      b"num_cases_per_batch": n, b"num_vis": 3072}))
    return batches


def write_cifar100(root: Path, n: int = 8, protocol: int = 2) -> dict[str, dict[str, Any]]:
    """``root/cifar-100-python`` pickled by Python 3 (``str`` keys)."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, n)]
        d = {"filenames": [f"f{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
             "coarse_labels": [f // 5 for f in fine], "data": data}
        out[name] = d
        (folder / name).write_bytes(pickle.dumps(d, protocol=protocol))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return out


def make_tar(src_root: Path, top: str, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_root / top, arcname=top)
    return archive


# ----------------------------------------------------------------- loading


def test_py2_pickle_is_the_real_wire_format(tmp_path: Path) -> None:
    """Sanity check of the hand-written stream: Python's own unpickler reads it like the CIFAR page says."""
    data = np.arange(3072 * 2, dtype=np.uint64).astype(np.uint8).reshape(2, 3072)
    blob = py2_pickle({b"data": data, b"labels": [3, 300]})
    d = pickle.loads(blob, encoding="bytes")
    assert list(d) == [b"data", b"labels"] and d[b"labels"] == [3, 300]
    np.testing.assert_array_equal(d[b"data"], data)


def test_cifar10_bytes_keys(tmp_path: Path) -> None:
    batches = write_cifar10(tmp_path)
    ds = load_cifar(SPECS["cifar10"], tmp_path, download=False)
    assert ds.train.inputs.shape == (30, 3, 32, 32) and ds.train.inputs.dtype.is_floating_point is False
    assert ds.test.inputs.shape == (6, 3, 32, 32)
    assert ds.train.classes == CIFAR10_NAMES and ds.num_classes == 10
    expect = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(ds.train.inputs.numpy(), expect)
    assert ds.train.labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert ds.test.labels.tolist() == batches["test_batch"][1]
    # channel-major layout: the first 1024 values of a row are the red plane
    np.testing.assert_array_equal(ds.test.inputs[0, 0].numpy().ravel(), batches["test_batch"][0][0, :1024])
    assert ds.train.mean == (0.4914, 0.4822, 0.4465) and ds.train.std == (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar100_str_keys_fine_and_coarse(tmp_path: Path, protocol: int) -> None:
    src = write_cifar100(tmp_path, protocol=protocol)
    fine = load_cifar(SPECS["cifar100"], tmp_path, download=False)
    assert fine.num_classes == 100 and fine.train.classes[7] == "fine7"
    assert fine.train.labels.tolist() == src["train"]["fine_labels"]
    np.testing.assert_array_equal(fine.test.inputs.numpy().reshape(-1, 3072), src["test"]["data"])
    coarse = load_cifar(SPECS["cifar100"], tmp_path, download=False, label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.test.labels.tolist() == src["test"]["coarse_labels"]
    assert coarse.train.mean == (0.5071, 0.4865, 0.4409)


def test_registered_names(tmp_path: Path) -> None:
    from fewstep.data import load_dataset

    write_cifar10(tmp_path)
    assert len(load_dataset("cifar10", tmp_path, download=False).train) == 30
    write_cifar100(tmp_path)
    assert load_dataset("cifar100", tmp_path, download=False, label_mode="coarse").num_classes == 20


def test_archive_only_is_extracted_atomically(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    write_cifar10(src)
    root.mkdir()
    make_tar(src, "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    ds = load_cifar(SPECS["cifar10"], root, download=False)
    assert len(ds.train) == 30
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no temp left
    assert len(load_cifar(SPECS["cifar10"], root, download=False).test) == 6  # second time: from the folder


def test_download_through_mirror_then_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """download=True fetches the archive (here from a file:// mirror set by $FEWSTEP_MIRROR), checks md5, extracts."""
    src, served, root = tmp_path / "src", tmp_path / "served", tmp_path / "root"
    write_cifar10(src)
    served.mkdir()
    arch = make_tar(src, "cifar-10-batches-py", served / "cifar-10-python.tar.gz")
    spec = dataclasses.replace(SPECS["cifar10"], md5=hashlib.md5(arch.read_bytes()).hexdigest())
    monkeypatch.setenv("FEWSTEP_MIRROR", served.as_uri())
    ds = load_cifar(spec, root, download=True, timeout=2)
    assert len(ds.train) == 30 and (root / "cifar-10-python.tar.gz").is_file()
    # with the official md5 the served archive is rejected, and the error says what to put where
    root2 = tmp_path / "root2"
    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar(SPECS["cifar10"], root2, download=True, timeout=2)
    msg = str(ei.value)
    assert "md5 mismatch" in msg and str(root2) in msg and "cifar-10-python.tar.gz" in msg
    assert not (root2 / "cifar-10-python.tar.gz").exists()


def test_missing_dataset_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as ei:
        load_cifar(SPECS["cifar100"], tmp_path, download=False)
    msg = str(ei.value)
    for part in ("cifar-100-python/train", "cifar-100-python/meta", "cifar-100-python.tar.gz", str(tmp_path),
                 "FEWSTEP_DATA", "--data-root"):
        assert part in msg, msg


def test_incomplete_folder_is_not_taken_as_complete(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_cifar(SPECS["cifar10"], tmp_path, download=False)


def test_wrong_contents_are_format_errors(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataFormatError, match=r"data_batch_2.*uint8 array \[N, 3072\]"):
        load_cifar(SPECS["cifar10"], tmp_path, download=False)
    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(DataFormatError, match="0..9"):
        load_cifar(SPECS["cifar10"], tmp_path, download=False)
    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:-40])
    with pytest.raises(DataFormatError, match="data_batch_2.*not a valid CIFAR pickle"):
        load_cifar(SPECS["cifar10"], tmp_path, download=False)


# ----------------------------------------------------------------- unpickling safety


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self) -> tuple:
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_global_is_refused_without_running(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "PWNED"
    target = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    for payload in ({"data": _Evil(marker), "labels": []}, {b"labels": _EvilEval()}):
        for protocol in (2, 4):
            target.write_bytes(pickle.dumps(payload, protocol=protocol))
            with pytest.raises(DataFormatError) as ei:
                load_cifar(SPECS["cifar10"], tmp_path, download=False)
            assert "data_batch_1" in str(ei.value) and "refusing to unpickle the global" in str(ei.value)
            assert not marker.exists()
    # the Python 2 spelling of a builtin, as an old-style GLOBAL opcode
    target.write_bytes(b"\x80\x02c__builtin__\neval\n" + pystr(b"1+1") + b"\x85R.")
    with pytest.raises(DataFormatError, match=r"__builtin__\.eval|builtins\.eval"):
        safe_unpickle(target)
    # sanity: the same bytes really would have run the command under plain pickle
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_unpickler_allows_only_data(tmp_path: Path) -> None:
    p = tmp_path / "ok"
    p.write_bytes(pickle.dumps({"a": [1, 2.5, (3, "x")], b"b": {1, 2}, "arr": np.eye(2, dtype=np.float32)}, protocol=2))
    d = safe_unpickle(p)
    assert set(d) == {"a", "b", "arr"} and d["b"] == {1, 2}
    p.write_bytes(pickle.dumps({"x": __import__("pathlib").PurePosixPath("a")}, protocol=4))
    with pytest.raises(DataFormatError, match="refusing to unpickle the global pathlib.PurePosixPath"):
        safe_unpickle(p)
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataFormatError, match="expected a pickled dict"):
        safe_unpickle(p)


# ----------------------------------------------------------------- tar safety


def _tar_with(archive: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


@pytest.mark.parametrize("evil", ["../escaped.txt", "cifar-10-batches-py/../../escaped.txt", "/tmp/escaped_abs.txt",
                                  "symlink", "hardlink", "fifo"])
def test_tar_path_traversal_and_links_are_refused(tmp_path: Path, evil: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    src = tmp_path / "src"
    write_cifar10(src)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for f in sorted((src / "cifar-10-batches-py").iterdir()):
        members.append((tarfile.TarInfo(f"cifar-10-batches-py/{f.name}"), f.read_bytes()))
    if evil == "symlink":
        info = tarfile.TarInfo("cifar-10-batches-py/link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        members.append((info, None))
    elif evil == "hardlink":
        info = tarfile.TarInfo("cifar-10-batches-py/hl")
        info.type, info.linkname = tarfile.LNKTYPE, "../../outside"
        members.append((info, None))
    elif evil == "fifo":
        info = tarfile.TarInfo("cifar-10-batches-py/fifo")
        info.type = tarfile.FIFOTYPE
        members.append((info, None))
    else:
        members.insert(0, (tarfile.TarInfo(evil), b"gotcha"))
    _tar_with(root / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataFormatError) as ei:
        load_cifar(SPECS["cifar10"], root, download=False)
    assert "cifar-10-python.tar.gz" in str(ei.value) and "refusing archive member" in str(ei.value)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/escaped_abs.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # nothing extracted, no temp dir


def test_truncated_archive_leaves_no_folder(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    write_cifar10(src, n=200)
    root.mkdir()
    arch = make_tar(src, "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    arch.write_bytes(arch.read_bytes()[: arch.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="cifar-10-python.tar.gz.*cannot extract"):
        load_cifar(SPECS["cifar10"], root, download=False)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_archive_missing_a_required_file(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    write_cifar10(src)
    (src / "cifar-10-batches-py" / "test_batch").unlink()
    root.mkdir()
    make_tar(src, "cifar-10-batches-py", root / "a.tar.gz")
    with pytest.raises(DataFormatError, match="lacks cifar-10-batches-py/test_batch"):
        safe_extract_tar(root / "a.tar.gz", root, "cifar-10-batches-py", SPECS["cifar10"].required)
    assert sorted(p.name for p in root.iterdir()) == ["a.tar.gz"]


# ----------------------------------------------------------------- image folders (the cifar10-jpeg layout)


def write_image_folder(root: Path, per_class: int = 3, classes: tuple[str, ...] = ("dog", "cat", "ship"),
                       splits: tuple[str, ...] = ("train", "test"),
                       size: tuple[int, int] = (8, 6)) -> dict[str, np.ndarray]:
    """``root/<split>/<class>/NNNN.png`` (lossless, for pixel-exact checks) plus one JPEG per class."""
    from PIL import Image

    rng = np.random.default_rng(5)
    pixels = {}
    for split in splits:
        for c in classes:
            d = root / split / c if split else root / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(a).save(d / f"{i:04d}.png")
                pixels[f"{split}/{c}/{i:04d}.png"] = a
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / "9999.jpg", quality=75)
    return pixels


def test_image_folder_layout_and_cache(tmp_path: Path) -> None:
    from fewstep.data.imagefolder import load_image_folder

    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    pixels = write_image_folder(folder)
    ds = load_image_folder(folder, cache_dir=cache)
    assert ds.train.classes == ["cat", "dog", "ship"]  # sorted folder names
    assert ds.train.inputs.shape == (12, 3, 8, 6) and len(ds.test) == 12
    assert ds.train.labels.tolist() == [0, 1, 2] * 4  # interleaved: every prefix is class-balanced
    np.testing.assert_array_equal(ds.train.inputs[0].numpy(), pixels["train/cat/0000.png"].transpose(2, 0, 1))
    x = ds.train.inputs.numpy() / 255.0
    assert np.allclose(ds.train.mean, x.mean(axis=(0, 2, 3)), atol=1e-4)
    assert np.allclose(ds.train.std, x.std(axis=(0, 2, 3)), atol=1e-4)
    assert ds.info["from_cache"] is False and len(list(cache.glob("*.npz"))) == 1
    again = load_image_folder(folder, cache_dir=cache)
    assert again.info["from_cache"] is True
    np.testing.assert_array_equal(again.test.inputs.numpy(), ds.test.inputs.numpy())
    # changing one image (new mtime and size) invalidates the cache; the stale cache file is removed
    from PIL import Image
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(folder / "train" / "cat" / "0000.png")
    os.utime(folder / "train" / "cat" / "0000.png", ns=(1, 1))
    fresh = load_image_folder(folder, cache_dir=cache)
    assert fresh.info["from_cache"] is False and int(fresh.train.inputs[0].sum()) == 0
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob(".tmp-*"))
    # a corrupt cache is ignored and rewritten
    cfile = next(cache.glob("*.npz"))
    cfile.write_bytes(cfile.read_bytes()[:100])
    assert load_image_folder(folder, cache_dir=cache).info["from_cache"] is False
    assert load_image_folder(folder, cache_dir=cache).info["from_cache"] is True
    # a smoke run with a limit gets its own cache and does not evict the full one
    assert len(load_image_folder(folder, cache_dir=cache, limit=3).train) == 3
    assert len(list(cache.glob("*.npz"))) == 2
    assert load_image_folder(folder, cache_dir=cache).info["from_cache"] is True


def test_image_folder_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fewstep.data.imagefolder import load_image_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "imgs"
    write_image_folder(folder, per_class=1)
    ds = load_image_folder(folder)  # writable: cached beside the data, in a hidden folder the scan skips
    assert Path(ds.info["cache"]).parent == folder / ".fewstep-cache"
    assert load_image_folder(folder).info["from_cache"] is True
    ro = tmp_path / "ro"
    write_image_folder(ro, per_class=1)
    for p in sorted(ro.rglob("*"), reverse=True) + [ro]:
        if p.is_dir():
            p.chmod(0o555)
    try:
        ds = load_image_folder(ro)  # marked read-only (even to root): cached under $XDG_CACHE_HOME
        assert Path(ds.info["cache"]).parent == tmp_path / "xdg" / "fewstep" / "imagefolder"
        assert not (ro / ".fewstep-cache").exists()
    finally:
        for p in [ro, *ro.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)


def test_image_folder_errors_and_options(tmp_path: Path) -> None:
    from PIL import Image

    from fewstep.data import load_dataset
    from fewstep.data.imagefolder import load_image_folder
    from fewstep.errors import ConfigError

    folder = tmp_path / "imgs"
    write_image_folder(folder, per_class=2)
    gray = load_image_folder(folder, mode="L", cache=False, limit=4)
    assert gray.train.inputs.shape == (4, 1, 8, 6) and sorted(set(gray.train.labels.tolist())) == [0, 1, 2]
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(folder / "train" / "dog" / "odd.png")
    with pytest.raises(DataFormatError, match="odd.png.*size=\\(H, W\\)"):
        load_image_folder(folder, cache=False)
    assert load_image_folder(folder, cache=False, size=(4, 4)).train.inputs.shape[1:] == (3, 4, 4)
    (folder / "train" / "dog" / "odd.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFormatError, match="odd.png.*cannot decode"):
        load_image_folder(folder, cache=False)
    (folder / "train" / "dog" / "odd.png").unlink()
    (folder / "test" / "zebra").mkdir()
    with pytest.raises(DataFormatError, match="zebra"):
        load_image_folder(folder, cache=False)
    (folder / "test" / "zebra").rmdir()
    # generic registered loader; a relative path is resolved against the data root
    ds = load_dataset("image-folder", tmp_path, download=False, path="imgs", cache=False)
    assert ds.name == "image-folder" and ds.num_classes == 3
    with pytest.raises(ConfigError, match="path"):
        load_dataset("image-folder", tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="cifar10-jpeg"):
        load_dataset("cifar10-jpeg", tmp_path, download=False)


def test_image_folder_without_splits_is_split_by_class(tmp_path: Path) -> None:
    from fewstep.data.imagefolder import load_image_folder

    folder = tmp_path / "flat"
    write_image_folder(folder, per_class=4, splits=("",))
    ds = load_image_folder(folder, cache=False, test_fraction=0.4, split_seed=1)
    assert len(ds.train) + len(ds.test) == 15 and len(ds.test) == 6  # 2 of 5 per class
    assert np.bincount(ds.test.labels.numpy()).tolist() == [2, 2, 2]
