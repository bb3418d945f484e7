"""The README's and the docs pages' Python examples run as written (docs that cannot go stale)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The docs pages continue the README's example (same namespace), in this order.
DOCS = sorted((ROOT / "docs").rglob("*.md"))

# Checked after the examples, in the same namespace.
CHECKS = """
import numpy as np
assert np.isfinite(float(metrics["loss"]))
assert int(never_stopped.step) == 2 and int(resumed.step) == 2   # docs: save and resume
assert same.step == 1
assert np.isfinite(loss)
assert maml.inner_lrs["conv0"]["kernel"].shape == (5,)
assert int(my_state.step) == 1 and np.isfinite(float(my_metrics["loss"]))
assert my_lrs["bn"]["scale"] is None and my_lrs["conv"]["kernel"].shape == (1,)
print("README examples ok")
"""


def python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_python_examples_run():
    readme = python_blocks(README)
    assert len(readme) >= 2, "README should show the functional API and the facade"
    blocks = readme + [b for page in DOCS for b in python_blocks(page)]
    # In a subprocess with LLVM optimisation off: the examples' compiles dominate, and
    # the numbers they print are not compared with anything.
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"}
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks) + CHECKS], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README examples ok" in out.stdout


def test_docs_include_existing_readme_sections():
    """A docs page's ``--8<-- "README.md:NAME"`` names a section the README marks."""
    readme = README.read_text()
    included = [name for page in DOCS
                for name in re.findall(r'--8<-- "README\.md:([\w-]+)"', page.read_text())]
    assert included, "docs/getting-started.md should include the README's example"
    for name in included:
        assert f"--8<-- [start:{name}]" in readme and f"--8<-- [end:{name}]" in readme, name
