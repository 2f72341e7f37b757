"""A plain (non-editable) install carries the shipped configs: `--preset NAME` and the
demo's default config are found under PREFIX/share/peakstream/configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

from tests.support.paths import ROOT


@pytest.mark.system
def test_a_wheel_install_finds_the_shipped_configs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("stream", "nodes", "configs"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(tmp_path / "wheels"), str(src)], check=True, timeout=600)
    (wheel,) = (tmp_path / "wheels").glob("peakstream-*.whl")
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    # our dependencies from the test environment (a path line: its editable finder of
    # stream / nodes is not loaded, so the wheel's own copy is what imports)
    (tmp_path / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.copy(tmp_path / "deps.pth", site.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--prefix",
                    str(env), str(wheel)], check=True, timeout=600)
    r = subprocess.run([str(python), "-c", "import stream.cli.presets as p; "
                        "print(p.__file__); print(p.CONFIGS); print(' '.join(p.presets()))"],
                       capture_output=True, text=True, cwd=tmp_path, check=True)
    module, configs, names = r.stdout.splitlines()
    assert module.startswith(str(env))  # the installed copy, not the checkout
    assert configs == str(env / "share" / "peakstream" / "configs")
    assert {"simulated", "imaged11", "bliss", "pva"} <= set(names.split())
