"""NIR: the version floor fewstep declares, and the dtype-aware tolerance on imported input gains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fewstep.nir_io as nir_io
from fewstep.layers import TimeFold
from fewstep.neurons import LIF
from fewstep.nir_io import NIR_MIN_VERSION, NIRModel, Scale, export_nir, import_nir

nir = pytest.importorskip("nir", reason="NIR tests need the 'nir' package: pip install 'fewstep[nir]'")


def _mlp() -> NIRModel:
    torch.manual_seed(0)
    return NIRModel(nn.Sequential(nn.Linear(6, 5)), nn.Sequential(LIF(decay=0.8), TimeFold(nn.Linear(5, 3)), LIF()),
                    (6,), 3, 2).eval()


def test_declared_floor_is_the_one_the_code_checks():
    text = open("pyproject.toml", encoding="utf-8").read()
    floor = ".".join(map(str, NIR_MIN_VERSION))
    assert NIR_MIN_VERSION >= (1, 0, 6)  # nir 1.0.4 (what sinabs pins) has no IF/LIF v_reset
    assert text.count(f'"nir>={floor}"') == 2  # the [test] and the [nir] extras
    assert '"nir>=1.0"' not in text


@pytest.mark.parametrize("old", ["1.0.4", "1.0.5", "0.5.0", "1.0.5.post1"])
def test_an_older_nir_gets_one_clear_error_at_export_and_import(monkeypatch, old):
    # A real nir 1.0.4 cannot be installed next to the rest of the test environment, so the
    # function that reads the installed version is replaced; everything after it is the real code.
    graph = export_nir(_mlp())
    monkeypatch.setattr(nir_io, "_nir_version", lambda: old)
    with pytest.raises(ImportError, match=rf"needs nir >= 1\.0\.6 .*found nir {old}"):
        export_nir(_mlp())
    with pytest.raises(ImportError, match="pip install 'nir>=1.0.6'"):
        import_nir(graph)


@pytest.mark.parametrize("new", ["1.0.6", "1.0.8", "1.1.0rc1", "2.0"])
def test_the_floor_and_newer_pass(monkeypatch, new):
    monkeypatch.setattr(nir_io, "_nir_version", lambda: new)
    assert export_nir(_mlp()).nodes["body_0"] is not None


def test_the_installed_nir_is_read_from_its_metadata():
    assert nir_io._nir_version() == nir.__version__
    assert nir_io._version_tuple("1.0.10") > nir_io._version_tuple("1.0.6") > nir_io._version_tuple("1.0.5")


def _float32_graph(gain: float = 1.0):
    """Linear -> LIF whose tau and r are float32 arrays (as snnTorch and most tools write them)."""
    lam, dt = 0.8, 1e-4
    tau = np.full(4, dt / (1 - lam), dtype=np.float32)
    r = (tau / np.float32(dt) * np.float32(gain)).astype(np.float32)
    nodes = {"input": nir.Input({"input": np.array([4])}), "fc": nir.Linear(weight=np.eye(4, dtype=np.float32)),
             "lif": nir.LIF(tau=tau, r=r, v_leak=np.zeros(4, np.float32), v_threshold=np.ones(4, np.float32),
                            v_reset=np.zeros(4, np.float32)),
             "output": nir.Output({"output": np.array([4])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                        metadata={"dt": dt, "timesteps": 2})


def test_float32_round_off_of_the_gain_adds_no_scale():
    graph = _float32_graph()
    lif = graph.nodes["lif"]
    gain = 1e-4 * float(lif.r[0]) / float(lif.tau[0])
    assert gain != 1.0 and abs(gain - 1.0) > 1e-9  # float32 round-off that the old 1e-9 tolerance turned into a Scale
    model = import_nir(graph)
    assert not any(isinstance(m, Scale) for m in model.modules())


def test_a_float32_model_round_trips_through_a_file_without_a_scale(tmp_path):
    model = _mlp()
    graph = export_nir(model)
    for node in graph.nodes.values():  # what a float32 writer would have stored
        for key in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
            if hasattr(node, key):
                setattr(node, key, np.asarray(getattr(node, key), dtype=np.float32))
    nir.write(str(tmp_path / "m.nir"), graph)
    back = import_nir(tmp_path / "m.nir")
    assert not any(isinstance(m, Scale) for m in back.modules())
    x = torch.randn(2, 2, 6) * 3
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=1e-6)


def test_a_real_gain_still_becomes_a_scale():
    model = import_nir(_float32_graph(gain=1.001))
    scales = [m for m in model.modules() if isinstance(m, Scale)]
    assert len(scales) == 1 and float(scales[0].scale) == pytest.approx(1.001, rel=1e-6)


def test_the_tolerance_follows_the_dtype():
    assert nir_io._gain_tol(np.float32) == pytest.approx(8 * 2.0**-23)
    assert nir_io._gain_tol(np.float64) == pytest.approx(8 * 2.0**-52)
    assert nir_io._gain_tol(torch.float16) > nir_io._gain_tol(torch.float32) > nir_io._gain_tol(torch.float64)
