"""The CIFAR-10 data the GPU suite carries: ``cifar10-jpeg`` packed into one small, exact file.

The GPU machine cannot see ``../shared``: everything it reads travels with the working tree
(64 MiB in all, wheels included). The JPEG copy of CIFAR-10 is 55 MiB as 60,000 files, but every
one of its files begins with the same 623-byte header (JFIF, quantisation and Huffman tables,
frame and scan headers: one encoder, one quality, one size); only the entropy-coded scan after
it differs, about 260 bytes an image. So the pack stores that header once and each image's
remaining bytes, all 50,000 + 10,000 images in about 17 MB, and rebuilds every file byte for
byte (each is checked against its stored CRC-32 on the way out). Files that do not start with
the common header are stored whole. Nothing is decoded or re-encoded: the suite's accuracy run
reads exactly the images a CPU run reads from ``../shared/data/cifar10-jpeg``.

Build it here, once, into the git-ignored ``gpu_data/`` (it then travels with ``carry``)::

    python benchmarks/gpu_suite_data.py --prepare                      # all 60,000 images
    python benchmarks/gpu_suite_data.py --prepare --train-per-class 2000   # a smaller subset
    python benchmarks/gpu_suite_data.py --check gpu_data/cifar10-jpeg.npz  # unpack and verify

The file is an ``.npz`` (no pickles): ``classes``, ``header`` and per split ``<split>_blob``
(uint8, the bodies end to end), ``<split>_offsets`` (int64, n + 1), ``<split>_labels``,
``<split>_names``, ``<split>_full`` (stored with its own header) and ``<split>_crc32``.
:func:`unpack` writes ``<dest>/cifar10-jpeg/{train,test}/<class>/<name>``, the layout the
``cifar10-jpeg`` dataset reads.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACK = ROOT / "gpu_data" / "cifar10-jpeg.npz"
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
SPLITS = ("train", "test")
FORMAT_VERSION = 1
DATASET_DIR = "cifar10-jpeg"

# (split, class index, file name, bytes)
Entry = tuple[str, int, str, bytes]


def jpeg_header(blob: bytes) -> bytes | None:
    """The bytes of a baseline JPEG up to the end of its first start-of-scan segment, or None."""
    i = 2  # after SOI
    if blob[:2] != b"\xff\xd8":
        return None
    while i + 4 <= len(blob):
        if blob[i] != 0xFF:
            return None
        marker = blob[i + 1]
        length = int.from_bytes(blob[i + 2:i + 4], "big")
        end = i + 2 + length
        if marker == 0xDA:  # SOS: the entropy-coded data follows its header
            return blob[:end] if end <= len(blob) else None
        i = end
    return None


def scan_folder(source: Path, per_class: dict[str, int | None]) -> tuple[list[str], list[Entry]]:
    """Class names and the files of ``source/{train,test}/<class>/`` (sorted; the first
    ``per_class[split]`` of each class, all when None)."""
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    entries: list[Entry] = []
    for split in SPLITS:
        for label, cls in enumerate(classes):
            files = sorted(p for p in (source / split / cls).iterdir() if p.is_file() and not p.name.startswith("."))
            limit = per_class.get(split)
            for p in files[:limit] if limit is not None else files:
                entries.append((split, label, p.name, p.read_bytes()))
    return classes, entries


def pack(entries: Iterable[Entry], classes: list[str], out: Path, source: str) -> dict:
    """Write the pack of ``entries`` to ``out`` (atomically); returns a summary."""
    entries = list(entries)
    headers: dict[bytes, int] = {}
    for _, _, _, blob in entries:
        h = jpeg_header(blob)
        if h is not None:
            headers[h] = headers.get(h, 0) + 1
    header = max(headers, key=headers.get) if headers else b""
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes), "header": np.frombuffer(header, np.uint8),
                                     "version": np.array(FORMAT_VERSION), "source": np.array(source)}
    counts = {}
    for split in SPLITS:
        rows = [e for e in entries if e[0] == split]
        bodies, full = [], []
        for _, _, _, blob in rows:
            shared = bool(header) and blob.startswith(header)
            bodies.append(blob[len(header):] if shared else blob)
            full.append(not shared)
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(b) for b in bodies], out=offsets[1:])
        arrays[f"{split}_blob"] = np.frombuffer(b"".join(bodies), np.uint8)
        arrays[f"{split}_offsets"] = offsets
        arrays[f"{split}_labels"] = np.array([e[1] for e in rows], np.int16)
        arrays[f"{split}_names"] = np.array([e[2] for e in rows])
        arrays[f"{split}_full"] = np.array(full, bool)
        arrays[f"{split}_crc32"] = np.array([zlib.crc32(e[3]) for e in rows], np.uint32)
        counts[split] = len(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".tmp-", suffix=".npz", delete=False) as fh:
        np.savez_compressed(fh, **arrays)
        tmp = fh.name
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, out)
    raw = sum(len(e[3]) for e in entries)
    return {"path": str(out), "bytes": out.stat().st_size, "images": counts, "raw_jpeg_bytes": raw,
            "header_bytes": len(header), "stored_whole": int(sum(arrays[f"{s}_full"].sum() for s in SPLITS))}


def unpack(path: Path, dest: Path, per_class: dict[str, int | None] | None = None) -> dict:
    """Rebuild the JPEG files of the pack at ``path`` under ``dest/cifar10-jpeg/`` (the first
    ``per_class[split]`` images of each class, all when None), checking each file's CRC-32.
    Returns the counts and the folder; raises ``ValueError`` on a corrupt pack."""
    per_class = per_class or {}
    t0 = time.perf_counter()
    with np.load(path, allow_pickle=False) as z:
        if int(z["version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: pack format {int(z['version'])}, expected {FORMAT_VERSION}")
        classes = [str(c) for c in z["classes"]]
        header = z["header"].tobytes()
        counts = {}
        for split in SPLITS:
            blob = z[f"{split}_blob"]
            offsets, labels, names = z[f"{split}_offsets"], z[f"{split}_labels"], z[f"{split}_names"]
            full, crcs = z[f"{split}_full"], z[f"{split}_crc32"]
            taken = dict.fromkeys(range(len(classes)), 0)
            limit = per_class.get(split)
            for c in classes:
                (dest / DATASET_DIR / split / c).mkdir(parents=True, exist_ok=True)
            n = 0
            for i in range(len(labels)):
                label = int(labels[i])
                if limit is not None and taken[label] >= limit:
                    continue
                taken[label] += 1
                body = blob[offsets[i]:offsets[i + 1]].tobytes()
                data = body if full[i] else header + body
                if zlib.crc32(data) != int(crcs[i]):
                    raise ValueError(f"{path}: {split}/{classes[label]}/{names[i]} fails its CRC-32 check")
                (dest / DATASET_DIR / split / classes[label] / str(names[i])).write_bytes(data)
                n += 1
            counts[split] = n
    return {"folder": str(dest / DATASET_DIR), "images": counts, "classes": len(classes),
            "seconds": round(time.perf_counter() - t0, 2)}


def synthetic_pack(out: Path, train_per_class: int = 20, test_per_class: int = 10, seed: int = 0) -> dict:
    """A tiny pack of random 32x32 JPEGs in CIFAR-10's layout (for the suite's dry run where the
    real pack is absent): same code path, not real data."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    classes = [f"class{i}" for i in range(10)]
    entries: list[Entry] = []
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for label in range(10):
            base = rng.integers(0, 256, 3)
            for j in range(n):
                img = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=75)
                entries.append((split, label, f"{j:04d}.jpg", buf.getvalue()))
    return pack(entries, classes, out, "synthetic (random JPEGs, not CIFAR-10)")


def check(path: Path, source: Path | None) -> dict:
    """Unpack into a temporary folder; with ``source``, compare every file byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        info = unpack(path, Path(tmp))
        if source is not None and source.is_dir():
            folder = Path(tmp) / DATASET_DIR
            mismatched = 0
            for p in folder.rglob("*"):
                if p.is_file() and (source / p.relative_to(folder)).read_bytes() != p.read_bytes():
                    mismatched += 1
            info["compared_with"] = str(source)
            info["mismatched_files"] = mismatched
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build the pack from --source")
    ap.add_argument("--check", type=Path, metavar="PACK", help="unpack PACK and verify it (against --source)")
    ap.add_argument("--source", type=Path, default=None,
                    help=f"the cifar10-jpeg folder (default $FEWSTEP_DATA/cifar10-jpeg or {DEFAULT_SOURCE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_PACK, help="the pack to write (default gpu_data/...)")
    ap.add_argument("--train-per-class", type=int, default=None, help="training images per class (default all)")
    ap.add_argument("--test-per-class", type=int, default=None, help="test images per class (default all)")
    ap.add_argument("--max-mb", type=float, default=60.0, help="refuse to write a pack larger than this")
    args = ap.parse_args(argv)
    source = args.source
    if source is None:
        env = os.environ.get("FEWSTEP_DATA")
        source = Path(env) / DATASET_DIR if env else DEFAULT_SOURCE
    if args.prepare:
        if not (source / "train").is_dir():
            print(f"gpu_suite_data: no cifar10-jpeg folder at {source}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        classes, entries = scan_folder(source, {"train": args.train_per_class, "test": args.test_per_class})
        info = pack(entries, classes, args.out, f"cifar10-jpeg from {source}")
        info["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"packed {info['images']} images ({info['raw_jpeg_bytes'] / 1e6:.1f} MB of JPEG files) into "
              f"{info['path']}: {info['bytes'] / 1e6:.1f} MB; {info['stored_whole']} stored whole")
        if info["bytes"] > args.max_mb * 1e6:
            os.unlink(args.out)
            print(f"gpu_suite_data: the pack is over --max-mb {args.max_mb}; removed. Take fewer images per class.",
                  file=sys.stderr)
            return 1
    if args.check or args.prepare:
        info = check(args.check or args.out, source if source.is_dir() else None)
        print(f"check: {info}")
        if info.get("mismatched_files"):
            return 1
    if not (args.check or args.prepare):
        ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
