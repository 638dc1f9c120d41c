"""The prepared GPU suite, run here as its CPU dry run (tiny sizes, Triton kernels interpreted).

One subprocess runs ``benchmarks/gpu_suite.py --dry-run`` end to end (about 30-60 s); the tests
read its two files. They check that every section ran (or was skipped with a reason), that the
kernel-correctness section covers every neuron option and reports finite errors inside its
limits, and that its checker is not vacuous: a reference 0.1 % off must be flagged. The data pack
of ``benchmarks/gpu_suite_data.py`` is tested on its own (byte-exact round trip, corruption found).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from benchmark_scripts import ROOT, load_benchmark

OK = {"ok", "skipped"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {k: v for k, v in os.environ.items() if k not in ("FEWSTEP_KERNELS", "FEWSTEP_REFERENCE")}
    env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # A pack that does not exist: the dry run then builds a tiny synthetic one (hermetic).
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out),
           "--data", str(out / "absent.npz")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert (out / "gpu_suite.json").is_file() and (out / "gpu_suite.md").is_file(), r.stdout[-2000:]
    data = json.loads((out / "gpu_suite.json").read_text())
    return {"json": data, "md": (out / "gpu_suite.md").read_text(), "stdout": r.stdout, "out": out}


def _section(suite, name):
    return suite["json"]["sections"][name]


def test_every_section_ran_ok_or_was_skipped(suite):
    gs = load_benchmark("gpu_suite")
    secs = suite["json"]["sections"]
    assert list(secs) == list(gs.SECTIONS)
    for name, s in secs.items():
        assert s["status"] in OK, (name, s.get("status"), s.get("reason"), s.get("log_tail", "")[-1500:])
        if s["status"] == "skipped":
            assert s.get("reason"), name
        assert f"| {name} | {s['status']} |" in suite["md"]
    assert suite["json"]["meta"]["dry_run"] is True
    assert (suite["out"] / "gpu_suite.log").is_file()


def test_correctness_covers_every_option_within_tolerance(suite):
    gs = load_benchmark("gpu_suite")
    c = _section(suite, "correctness")
    if c["status"] == "skipped":
        pytest.skip(f"kernel correctness skipped: {c.get('reason')}")
    assert c["info"]["interpreted"] is True
    rows = c["rows"]
    assert len(rows) == c["info"]["variants_total"] == len(gs.variant_grid(full=False))
    variants = [r["variant"] for r in rows]
    assert {v["neuron"] for v in variants} == {"IF", "LIF", "PLIF", "MT-LIF"}
    assert {v["reset"] for v in variants} == {"hard", "soft"}
    assert {v["surrogate"] for v in variants} == {"rectangle", "triangle", "sigmoid", "arctan"}
    assert {v["dtype"] for v in variants} == {"fp32", "bf16", "fp16"}
    assert any(v["learn_decay"] for v in variants) and any(v["learn_thr"] for v in variants)
    assert {v["T"] for v in variants} >= {1, 4, 8, 10}  # both backward paths
    for r in rows:
        assert r["passed"], (r["id"], r.get("failed_checks"), r.get("error"))
        assert isinstance(r["max_rel"], float) and math.isfinite(r["max_rel"]), r["id"]
        assert isinstance(r["max_abs"], float) and math.isfinite(r["max_abs"]), r["id"]
        assert r["max_rel"] <= gs.TENSOR_TOL[r["variant"]["dtype"]], r["id"]
        assert {"spikes", "v_T", "grad_x"} <= set(r["errors"]), r["id"]
        if r["variant"]["learn_decay"]:
            assert "grad_decay" in r["errors"], r["id"]
        if r["variant"]["learn_thr"]:
            assert "grad_threshold" in r["errors"], r["id"]
        if r["variant"]["dtype"] == "fp32":  # fp32 inside: far below the limit
            assert r["max_rel"] < 1e-6, r["id"]
    summary = c["info"]["summary"]
    assert set(summary) == {"fp32", "bf16", "fp16"} and all(s["passed"] == s["variants"] > 0 for s in summary.values())
    assert "## Kernel correctness" in suite["md"] and "flagged, as it must be" in suite["md"]


def test_checker_flags_a_wrong_reference(suite):
    """The suite's own self-test: the float64 reference with its decay 0.1 % off must fail."""
    gs = load_benchmark("gpu_suite")
    c = _section(suite, "correctness")
    if c["status"] == "skipped":
        pytest.skip(f"kernel correctness skipped: {c.get('reason')}")
    st = c["info"]["self_test"]
    assert st["flagged"] is True, st
    assert st["max_rel"] > 10 * gs.TENSOR_TOL["fp32"], st
    assert "v_T" in st["failed_checks"] and "grad_x" in st["failed_checks"], st


def test_measurement_sections_report_numbers(suite):
    n = _section(suite, "neurons")
    fused = [r for r in n["rows"] if r["system"] == "fewstep fused"]
    assert {(r["neuron"], r["dtype"]) for r in fused} == {(k, d) for k in ("LIF", "MT-LIF") for d in ("fp32", "bf16")}
    for r in fused:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["spikes_equal_fp32_eager_loop"] is True
    assert n["info"]["copy_gbs"] > 0
    for r in n["rows"]:  # a peer either has times or says why not
        assert "fwd_bwd_ms" in r or r["note"].startswith("skipped"), r
    t = _section(suite, "training")
    systems = {(r["precision"], r["system"], r["layout"]) for r in t["rows"]}
    assert systems == {(p, s, "channels_last") for p in ("fp32", "bf16") for s in ("fewstep", "SpikingJelly", "snnTorch")}
    assert all(r["img_s"] > 0 for r in t["rows"] if r["system"] == "fewstep")
    stc = _section(suite, "stc")
    assert {r["case"] for r in stc["rows"]} == {"N-MNIST-sized", "Gesture-sized"}
    assert all(r["matches_cpu"] and r["events_per_s"] > 0 for r in stc["rows"])
    acc = _section(suite, "accuracy")
    assert acc["info"]["synthetic"] is True and acc["info"]["unpacked"]["images"] == {"train": 200, "test": 100}
    (row,) = acc["rows"]
    assert row["epochs"] >= 1 and len(row["test_accuracy_per_step"]) == 2  # T = 2
    assert all(0.0 <= a <= 1.0 for a in row["test_accuracy_per_step"])


def test_pack_round_trip_is_exact_and_checked(tmp_path):
    data = load_benchmark("gpu_suite_data")
    info = data.synthetic_pack(tmp_path / "p.npz", train_per_class=3, test_per_class=2)
    assert info["images"] == {"train": 30, "test": 20} and info["stored_whole"] == 0 and info["header_bytes"] > 0
    got = data.unpack(tmp_path / "p.npz", tmp_path / "a", {"train": 2, "test": None})
    assert got["images"] == {"train": 20, "test": 20}
    # the same files packed again from the folder give the same pack contents
    classes, entries = data.scan_folder(tmp_path / "a" / "cifar10-jpeg", {})
    assert len(entries) == 40 and all(e[3][:2] == b"\xff\xd8" for e in entries)
    data.pack(entries + [("train", 0, "odd.jpg", b"not a jpeg at all")], classes, tmp_path / "q.npz", "test")
    data.unpack(tmp_path / "q.npz", tmp_path / "b")
    for split, label, name, blob in entries:
        assert (tmp_path / "b" / "cifar10-jpeg" / split / classes[label] / name).read_bytes() == blob
    assert (tmp_path / "b" / "cifar10-jpeg" / "train" / classes[0] / "odd.jpg").read_bytes() == b"not a jpeg at all"
    # a flipped byte in the stored bodies is caught by the CRC
    with np.load(tmp_path / "q.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["train_blob"][5] ^= 0xFF
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="CRC-32"):
        data.unpack(tmp_path / "bad.npz", tmp_path / "c")


def test_help_documents_the_offline_preparation():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--help"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0
    for needle in ("--dry-run", "gpu_suite_data.py --prepare", "pip download", "--no-index", ".whl"):
        assert needle in r.stdout, needle
