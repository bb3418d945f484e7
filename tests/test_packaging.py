"""The wheel holds every module of the library and the scripts, and works from it alone.

``pip install .`` builds this same wheel (setuptools' PEP 517 backend). A module left out
of ``[tool.setuptools] packages`` would import fine from the checkout and fail only for
users; so the wheel is built from a copy of the sources, its file list is compared with
the checkout's, and it is imported from an unpacked copy with the checkout off the path.
"""

import configparser
import email.parser
import pathlib
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("maml_jax", "experiments")
# Recorded run outputs live under experiments/results: data, not part of the package.
NOT_PACKAGED = ("experiments/results/",)


def _sources() -> set[str]:
    out = set()
    for top in PACKAGE_DIRS:
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(NOT_PACKAGED):
                out.add(rel)
    return out


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for top in PACKAGE_DIRS:
        shutil.copytree(ROOT / top, src / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    # The build backend called directly (what pip runs): no network, no build isolation,
    # and nothing written into the checkout.
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_wheel(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=src,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return dist / out.stdout.strip().splitlines()[-1]


def test_wheel_contents_metadata_and_import(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info_dir = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = email.parser.Parser().parsestr(zf.read(f"{info_dir}/METADATA").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(zf.read(f"{info_dir}/entry_points.txt").decode())
        zf.extractall(tmp_path / "site")

    missing = sorted(_sources() - names)
    assert not missing, f"modules missing from the wheel (pyproject [tool.setuptools]): {missing}"
    assert not any(n.startswith(NOT_PACKAGED) for n in names)

    requires = metadata.get_all("Requires-Dist")
    core = sorted(r.split(">")[0].split("=")[0] for r in requires if "extra ==" not in r)
    assert core == ["chex", "flax", "jax", "numpy", "optax"], core
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"data", "experiments", "tfds", "benchmarks"} <= extras, extras
    assert any("ml-collections" in r and "experiments" in r for r in requires)
    scripts = dict(entry_points["console_scripts"])
    assert scripts == {"maml-jax-train": "experiments.train:main",
                       "maml-jax-evaluate": "experiments.evaluate:main",
                       "maml-jax-reproduce": "experiments.reproduce:main"}

    # Imported from the unpacked wheel only: the checkout is neither the working directory
    # nor on the path. The entry points resolve to callables.
    code = (
        "import importlib, sys\n"
        "import maml_jax, maml_jax.data.omniglot, maml_jax.data.image_folder\n"
        f"assert maml_jax.__file__.startswith({str(tmp_path / 'site')!r}), maml_jax.__file__\n"
        "for target in sys.argv[1:]:\n"
        "    module, name = target.split(':')\n"
        "    assert callable(getattr(importlib.import_module(module), name)), target\n"
        "import experiments.configs\n"
        "print('wheel ok')\n")
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code, *scripts.values()], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "wheel ok" in out.stdout
