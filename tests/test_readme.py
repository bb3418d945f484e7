"""The README's Python examples run as written (documentation that cannot go stale)."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README should show the functional API and the facade"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own docs
    assert np.isfinite(float(namespace["metrics"]["loss"]))
    assert int(namespace["state"].step) == 1
    assert np.isfinite(namespace["loss"])
    assert namespace["maml"].inner_lrs["conv0"]["kernel"].shape == (5,)
