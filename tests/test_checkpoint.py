"""Checkpoints: atomic writes keep the previous good one; loading never executes code."""

import os
import pickle

import pytest
import torch

from fewstep.errors import CheckpointError
from fewstep.train.checkpoint import latest_good, load_checkpoint, save_checkpoint


def test_round_trip_and_previous_kept(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, p)
    save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, p)
    assert load_checkpoint(p)["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt.prev")["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Evil(str(marker))}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(p)
    assert not marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    assert not marker.exists()


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    p = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, p)
    save_checkpoint({"epoch": 2}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(p)
    state, used = latest_good(p)
    assert state["epoch"] == 1 and used.name == "last.pt.prev"


def test_missing_checkpoint(tmp_path):
    assert latest_good(tmp_path / "none.pt") is None
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


@pytest.mark.parametrize("content,problem", [
    (b"", "an empty file"), (b"# a markdown file\n\nwith text\n", "a text file, not a PyTorch checkpoint"),
    (bytes(range(7, 250)) * 4, "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
])
def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path, content, problem):
    """Issue 19, item 4: text raised KeyError from the unpickler, other bytes "would run code"
    followed by PyTorch's request to file an issue."""
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: ") and problem in msg and "\n" not in msg, msg
    assert "would run code" not in msg and "file an issue" not in msg, msg


def test_a_refused_object_is_one_line_without_pytorchs_advice(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"payload": _Evil(str(tmp_path / "pwned"))}, p)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    msg = str(info.value)
    assert "refused" in msg and "would run code" in msg and "\n" not in msg, msg
    assert "weights_only" not in msg and "file an issue" not in msg, msg


def test_legacy_pytorch_format_is_refused_before_loading(tmp_path):
    """The pre-1.6 format's size fields are trusted by torch.load: a fuzzed one asked for gigabytes
    (benchmarks/fuzz_readers.py, 15 MemoryErrors in 10,921 cases). fewstep writes only the zip format."""
    import torch

    from fewstep.errors import CheckpointError
    from fewstep.train.checkpoint import load_checkpoint

    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"old\.pt: a legacy \(pre-1\.6\) PyTorch file"):
        load_checkpoint(path)
    torch.save({"model": {"w": torch.zeros(3)}}, path)
    assert load_checkpoint(path)["model"]["w"].shape == (3,)
    with pytest.raises(CheckpointError, match="a directory, not a checkpoint file"):
        load_checkpoint(tmp_path)
