"""The wheel: it builds, holds the recipes and ``py.typed``, installs into a fresh venv and runs.

Slow (about a minute): ``python -m build --wheel`` on a copy of the sources (so no ``build/`` or
``*.egg-info`` lands in the work tree), then a fresh venv with no pip and no fewstep, the wheel
installed into it by this interpreter's pip, and the heavy dependencies (torch, numpy, ...) shared
from this environment through a ``.pth`` path (the role ``--system-site-packages`` plays for a
system Python). ``fewstep recipes`` and ``fewstep quickstart --set train.epochs=1`` must run
from the venv's own ``fewstep`` script, importing fewstep from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _offline_build_possible() -> bool:
    """``--no-isolation`` needs pyproject's build requirements installed here (setuptools >= 68 and
    wheel); otherwise ``build`` makes an isolated environment and fetches them from the package
    index. Checked in a fresh interpreter: importing setuptools puts its vendored copies on
    ``sys.path``, which ``build``'s own check does not count."""
    code = ("import importlib.metadata as m\n"
            "v = tuple(int(p) for p in m.version('setuptools').split('.')[:1])\n"
            "m.version('wheel')\n"
            "raise SystemExit(0 if v >= (68,) else 1)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "fewstep", src / "fewstep", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist)]
    if _offline_build_possible():
        cmd.append("--no-isolation")  # no download of the backend: fast, works offline
    proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(dist.glob("fewstep-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _venv_with_wheel(tmp: Path, wheel: Path) -> Path:
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The dependencies come from this environment; a plain path in a .pth file does not run the
    # .pth files inside it, so this environment's editable fewstep (if any) stays out.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "zz_shared_deps.pth").write_text("\n".join(sorted(shared)) + "\n")
    return py


def test_wheel_builds_installs_and_runs(tmp_path):
    import fewstep as fewstep_pkg

    pytest.importorskip("build", reason="packaging test needs 'build': pip install build")
    wheel = _build_wheel(tmp_path)

    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.name for p in (ROOT / "fewstep" / "recipes").glob("*.toml"))
    assert recipes and all(f"fewstep/recipes/{r}" in names for r in recipes), "recipes missing from the wheel"
    assert "fewstep/py.typed" in names
    assert "fewstep/data/digits.npz" in names, "the embedded digits are missing from the wheel"
    assert "fewstep/cli.py" in names and not any(n.startswith("tests/") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(meta).decode()
    for extra in ("test", "dev", "gpu", "nir", "tensorboard", "docs"):
        assert f"Provides-Extra: {extra}" in metadata
    # one version source: the wheel's version is fewstep.__version__
    assert f"\nVersion: {fewstep_pkg.__version__}\n" in metadata
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("tomli") and 'python_version < "3.11"' in r for r in base), base
    assert not any(r.startswith("scikit-learn") for r in base), "scikit-learn is only for the dev checks"
    test_extra = [r for r in requires if 'extra == "test"' in r]
    assert test_extra and not any(r.startswith("triton") for r in test_extra), "a CPU test install must not pull Triton"
    entry_points = zipfile.ZipFile(wheel).read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "fewstep = fewstep.cli:main" in entry_points

    py = _venv_with_wheel(tmp_path, wheel)
    bindir = py.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", FEWSTEP_THREADS="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(py), "-c", "import fewstep; print(fewstep.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=False, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout  # from the wheel

    fewstep = str(bindir / "fewstep")
    listed = subprocess.run([fewstep, "recipes"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if line.strip()]
    assert lines[0].split()[0] == "recipe", lines[0]  # the header row
    assert lines[-1].startswith("offline:"), lines[-1]  # the legend of the data column
    assert {line.split()[0] for line in lines[1:-1]} == {r[:-5] for r in recipes}

    run = subprocess.run([fewstep, "quickstart", "--set", "train.epochs=1", "--out", str(tmp_path / "run"),
                          "--no-progress", "--device", "cpu"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=False, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "run" / "report.json").is_file()
    assert "accuracy @ t=2" in run.stdout


def test_ruff_clean():
    """The rules selected in pyproject.toml ([tool.ruff.lint]) hold for the whole repository."""
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed (it is in the 'dev' extra)")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([ruff, "check", "--no-cache", str(root)], capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stdout + run.stderr
