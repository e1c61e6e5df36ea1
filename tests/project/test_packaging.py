"""What a wheel install gets: the packaged configs (genimg/configs/) and a working `genimg`.

The fast tests check `genimg.configs` (packaged_config, locate_config). The slow one builds a
wheel of the checkout, installs it into a fresh venv outside the repository and runs `genimg`
from yet another folder, so nothing can come from the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from genimg.configs import CONFIGS_DIR, locate_config, packaged_config
from genimg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# genimg.configs


def test_the_configs_live_in_the_package_and_the_old_folder_is_gone():
    assert CONFIGS_DIR == (ROOT / "genimg" / "configs").resolve()
    names = {p.name for p in CONFIGS_DIR.glob("*.yaml")}
    assert {"retrain.yaml", "tune-vae.yaml", "cifar10-gan.yaml", "vae-digits.yaml"} <= names
    assert not (ROOT / "configs").exists(), "the top-level configs/ folder is back"


def test_packaged_config_names_the_missing_file_and_lists_the_others():
    assert packaged_config("retrain.yaml") == CONFIGS_DIR / "retrain.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml.*available: .*retrain\.yaml"):
        packaged_config("nope.yaml")
    for bad in ("../pyproject.toml", "configs/retrain.yaml", "", ".."):
        with pytest.raises(ConfigError):
            packaged_config(bad)


@pytest.mark.parametrize("value", ["configs/cifar10-gan.yaml", "cifar10-gan.yaml", "cifar10-gan"])
def test_locate_config_finds_a_preset_by_name_from_any_folder(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    assert locate_config(value) == CONFIGS_DIR / "cifar10-gan.yaml"
    assert locate_config(Path(value)) == CONFIGS_DIR / "cifar10-gan.yaml"


def test_locate_config_prefers_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    own = tmp_path / "configs" / "cifar10-gan.yaml"
    own.write_text("model: {}\n")
    assert locate_config("configs/cifar10-gan.yaml") == Path("configs/cifar10-gan.yaml")
    assert locate_config(own) == own
    monkeypatch.setenv("HOME", str(tmp_path))
    assert locate_config("~/configs/cifar10-gan.yaml") == own


@pytest.mark.parametrize(
    "value",
    [
        "nope.yaml",
        "configs/nope.yaml",
        "other/cifar10-gan.yaml",
        "a/configs/cifar10-gan.yaml",
        "/no/such/cifar10-gan.yaml",
    ],
)
def test_locate_config_refuses_what_is_neither_a_file_nor_a_preset(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file not found: .*packaged presets: .*vae-digits\.yaml"):
        locate_config(value)


# --------------------------------------------------------------------------------------------
# A wheel, installed into a fresh venv


def _run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (
        f"{done.args} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _source_snapshot(dest: Path) -> Path:
    """What the build needs, copied out of the checkout: an in-tree build would write build/ and
    genimg.egg-info into it, and a stale build/lib could put deleted modules into the wheel."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "LICENSE", "LICENSE.txt", "NOTICE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "genimg", dest / "genimg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GENIMG_", "MLFLOW_", "PYTHON", "VIRTUAL_ENV", "RAY_ADDRESS", "PREFECT_API"))
    }
    env.update(
        GENIMG_HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
    )
    return env


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of the checkout, built in `tmp_path` (offline: no build isolation, no index)."""
    dist = tmp_path / "dist"
    _ok(
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-q",
                "-w",
                str(dist),
                str(_source_snapshot(tmp_path / "src")),
            ],
            cwd=tmp_path,
            timeout=180,
        )
    )
    (wheel,) = dist.glob("genimg-*.whl")
    return wheel


def install_in_fresh_venv(wheel: Path, tmp_path: Path) -> Path:
    """A fresh venv in `tmp_path / "venv"` with the wheel installed and the project venv's
    dependencies on its path; the venv's site-packages.

    The wheel goes in first, while the venv sees nothing else; then a .pth line puts the project
    venv's site-packages (the dependencies) on sys.path. A plain path line does not process the
    .pth files found there, so the project's editable genimg (a finder installed by
    __editable__.genimg-*.pth) stays out."""
    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path))
    python = venv / "bin" / "python"
    _ok(_run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path))
    fresh_site = Path(
        _ok(
            _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
        ).strip()
    )
    (fresh_site / "genimg-project-deps.pth").write_text("".join(f"{p}\n" for p in _project_sites()))
    return fresh_site


def _project_sites() -> list[str]:
    return list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_has_its_configs_and_trains(tmp_path):
    """Budget ≈ 20 s: build ≈ 2 s, venv with pip ≈ 4 s, two 2-step trainings without evaluation."""
    import setuptools  # the build backend, used without isolation (no network needed)

    assert int(setuptools.__version__.split(".")[0]) >= 77, (
        f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)"
    )

    # 1. The wheel: the configs as package data, genimg only (no pipelines/, tests/, bench/).
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"genimg"}, f"the wheel ships top-level {sorted(top)}"
    packaged = {
        n.removeprefix("genimg/configs/") for n in names if n.startswith("genimg/configs/") and n.endswith(".yaml")
    }
    assert packaged == {p.name for p in CONFIGS_DIR.glob("*.yaml")}
    assert "genimg/configs/__init__.py" in names

    # 2. A fresh venv outside the repository.
    fresh_site = install_in_fresh_venv(wheel, tmp_path)
    python, genimg = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin" / "genimg"
    project_sites = _project_sites()

    elsewhere, home = tmp_path / "elsewhere", tmp_path / "home"
    elsewhere.mkdir()
    env = _clean_env(home)

    # 3. genimg and its configs come from the fresh venv, not from the checkout.
    probe = (
        "import importlib.util, json, sys, genimg, genimg.configs as c; "
        "print(json.dumps({'genimg': genimg.__file__, 'configs': str(c.CONFIGS_DIR), "
        "'retrain': str(c.packaged_config('retrain.yaml')), "
        "'pipelines': importlib.util.find_spec('pipelines') is not None, "
        "'editable_finder': any('editable' in type(f).__name__.lower() or 'editable' in getattr(f, '__module__', '') "
        "for f in sys.meta_path), 'path': sys.path}))"
    )
    found = json.loads(_ok(_run([str(python), "-c", probe], cwd=elsewhere, env=env)))
    assert Path(found["genimg"]).is_relative_to(fresh_site), f"genimg imported from {found['genimg']}"
    assert not Path(found["genimg"]).is_relative_to(ROOT)
    assert Path(found["retrain"]).is_file() and Path(found["retrain"]).is_relative_to(fresh_site / "genimg" / "configs")
    assert not found["editable_finder"], "the project's editable finder was installed in the fresh venv"
    assert not found["pipelines"], "pipelines/ is importable from the fresh venv"
    assert any(Path(p) == Path(next(iter(project_sites))) for p in found["path"]), found["path"]

    # 4. The console script, from another folder.
    _ok(_run([str(genimg), "retrain", "--help"], cwd=elsewhere, env=env))

    # Evaluation at the end of training is skipped: it trains a feature network (≈ 18 s) and
    # has nothing to do with packaging.
    train = [
        str(genimg),
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--steps",
        "2",
        "--workers",
        "0",
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    ]
    result = json.loads(_ok(_run(train, cwd=elsewhere, env=env, timeout=300)))
    assert result["model"] == "vae" and result["metrics"], result
    assert int(result["metrics"]["step"]) == 2 and result["run_id"], result["metrics"]

    # The old README form `--config configs/NAME.yaml` names the packaged preset from anywhere.
    preset = train[:-1] + ["--config", "configs/vae-digits.yaml", "--json"]
    result = json.loads(_ok(_run(preset, cwd=elsewhere, env=env, timeout=300)))
    assert int(result["metrics"]["step"]) == 2, result["metrics"]
    assert not (elsewhere / "configs").exists() and not list(elsewhere.iterdir()), sorted(os.listdir(elsewhere))
