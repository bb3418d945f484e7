"""The README's Python examples run as written (documentation that cannot go stale)."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Checked after the examples, in the same namespace.
CHECKS = """
import numpy as np
assert np.isfinite(float(metrics["loss"]))
assert int(state.step) == 1
assert np.isfinite(loss)
assert maml.inner_lrs["conv0"]["kernel"].shape == (5,)
assert int(my_state.step) == 1 and np.isfinite(float(my_metrics["loss"]))
assert my_lrs["bn"]["scale"] is None and my_lrs["conv"]["kernel"].shape == (1,)
print("README examples ok")
"""


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README should show the functional API and the facade"
    # In a subprocess with LLVM optimisation off: the examples' compiles dominate, and
    # the numbers they print are not compared with anything.
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0"}
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks) + CHECKS], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "README examples ok" in out.stdout
