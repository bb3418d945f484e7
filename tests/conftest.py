"""Fixtures shared by the tests of more than one folder (plain helpers: ``tests/support/``)."""

import pytest

from tests.support.synthetic_images import make_miniimagenet_csv


@pytest.fixture(scope="module")
def mini_csv(tmp_path_factory):
    """A small mini-ImageNet in the split-CSV layout (random JPEGs), one per test module."""
    return make_miniimagenet_csv(tmp_path_factory.mktemp("mini") / "csv")
