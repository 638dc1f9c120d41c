"""Data-parallel training: torchrun with 2 gloo processes on CPU; the backend follows the device."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from fewstep.errors import ConfigError
from fewstep.train.distributed import choose_backend


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    # No FEWSTEP_DIST_BACKEND: --device cpu alone must choose gloo, also where CUDA exists.
    env = {k: v for k, v in os.environ.items() if k != "FEWSTEP_DIST_BACKEND"}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "fewstep", "train", "quickstart", "--device", "cpu", "--out", str(out),
           "--no-progress", "--set", "train.epochs=3",
           "--set", "model.options.channels=[8, 8]", "--set", "model.options.hidden=16"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    if r.returncode != 0 and "Address family not supported" in r.stderr:
        pytest.skip("no loopback networking for gloo here")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["train_samples"] == 1438
    assert report["accuracy"] > 0.5  # well above the 10 % of chance after 3 short epochs
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 3
    # each rank saw half of every global batch: 1438 // 2 samples a rank, batches of 16
    assert r.stdout.count("epoch 3/3") == 1, "only rank 0 should log"


@pytest.mark.parametrize(
    ("device", "cuda", "backend"),
    [
        ("cpu", True, "gloo"),  # issue #16: NCCL was picked whenever CUDA existed, even for --device cpu
        ("cpu", False, "gloo"),
        ("cuda", True, "nccl"),
        ("cuda:1", True, "nccl"),
        ("auto", True, "nccl"),
        ("auto", False, "gloo"),
        (None, True, "nccl"),
        (None, False, "gloo"),
    ],
)
def test_backend_follows_the_device(device, cuda, backend):
    assert choose_backend(device, cuda) == backend
    assert choose_backend(device, cuda, "") == backend  # an empty FEWSTEP_DIST_BACKEND is no override


def test_backend_override():
    assert choose_backend("cuda", True, "gloo") == "gloo"  # gloo reduces CUDA tensors too
    assert choose_backend("cuda", True, " NCCL ") == "nccl"
    assert choose_backend("cpu", True, "gloo") == "gloo"
    with pytest.raises(ConfigError, match="FEWSTEP_DIST_BACKEND.*nccl cannot reduce CPU tensors"):
        choose_backend("cpu", True, "nccl")
    with pytest.raises(ConfigError, match="FEWSTEP_DIST_BACKEND.*must be gloo or nccl, got 'mpi'"):
        choose_backend("cuda", True, "mpi")


def test_backend_needs_a_gpu_for_cuda():
    with pytest.raises(ConfigError, match="--device.*CUDA was requested but torch sees no GPU"):
        choose_backend("cuda", False)
    with pytest.raises(ConfigError, match="--device.*must be cpu, cuda or cuda:N, got 'tpu'"):
        choose_backend("tpu", True)


_JOIN = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from fewstep.train import distributed as d

    rank, world = d.setup("cpu")
    t = d.all_reduce_sum(torch.tensor([rank + 1.0]))
    out = {"rank": rank, "world": world, "backend": dist.get_backend(), "sum": t.item(),
           "device": str(d.rank_device("cpu"))}
    d.barrier()
    d.teardown()
    with open(sys.argv[1] + f".{rank}.json", "w") as f:
        json.dump(out, f)
""")


def test_setup_joins_a_gloo_group_for_a_cpu_run(tmp_path):
    """Two real processes join through setup("cpu") with no override and reduce a tensor."""
    script = tmp_path / "join.py"
    script.write_text(_JOIN)
    env = {k: v for k, v in os.environ.items() if k != "FEWSTEP_DIST_BACKEND"}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0 and "Address family not supported" in r.stderr:
        pytest.skip("no loopback networking for gloo here")
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"out.{rank}.json").read_text())
        assert got == {"rank": rank, "world": 2, "backend": "gloo", "sum": 3.0, "device": "cpu"}
