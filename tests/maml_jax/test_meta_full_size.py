"""maml_jax.meta's default outer step at the real size: its meta-gradient against float64.

Omniglot Conv4 (64 filters), 5 inner steps, second order, MSL weights of epoch 3, learned
per-layer per-step rates and per-step BN weights made distinct at every step, 2 tasks of
5-way 1-shot (``benchmarks/grad_check.py``, which also runs on accelerators). The wrong
max-pool derivative of an earlier version (a window's gradient lost when XLA recomputed the
pre-pool activations with different rounding) shows only at this size: 8 or 16 filters
hid it. Every test here compares per tensor, leaving out the conv biases (their gradient is
exactly zero in exact arithmetic: each feeds a batch norm with batch statistics).

float64 runs are compared at 1e-6; float32 runs at 1e-3 on the instance ``grad_check.SEED``,
where every float32 formulation and PyTorch float32 agree with float64 (see ``grad_check``'s
docstring: this meta-loss is piecewise smooth, and on some random instances even PyTorch's
float32 step is 60% away from float64).

The tests of the default step share one xdist group (its gradient is compiled once); the
other formulations run in a second group, in parallel on a 2-core machine.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "benchmarks"))

import formulation_consistency
import grad_check
import jax

pytestmark = pytest.mark.slow
DEFAULT_GROUP = pytest.mark.xdist_group("full_size_default")

TOL = grad_check.TOLERANCE


@pytest.fixture(scope="module")
def problem():
    return grad_check.problem()


@pytest.fixture(scope="module")
def default_gradient(problem):
    loss, grads, _ = grad_check.jax_grads("default", *problem, dtype="float32")
    return loss, grads


@pytest.fixture(scope="module")
def torch_reference(problem):
    meta_params, _, tasks = problem
    return grad_check.torch_grads(meta_params, tasks)


def _assert_close(errors: dict[str, float], what: str, tol: float = TOL):
    assert len(errors) == 20, sorted(errors)  # 14 parameter + 6 rate tensors (no conv biases)
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= tol}
    assert not bad, f"meta-gradient differs from {what} by more than {tol:g}: {bad}"


@DEFAULT_GROUP
def test_default_step_float32_matches_pytorch_reference_float64(default_gradient,
                                                                torch_reference):
    loss, grads = default_gradient
    t_loss, t_grads = torch_reference
    assert loss == pytest.approx(t_loss, rel=1e-5)
    _assert_close(grad_check.relative_errors(grads, t_grads), "PyTorch float64")


# The float64 step against PyTorch float64 (3.8e-9 measured) is in
# `benchmarks/grad_check.py` (`--dtypes float64`), not here: a minute of the suite's budget.


@DEFAULT_GROUP
def test_default_step_matches_float64_finite_differences(problem, default_gradient):
    meta_params, _, tasks = problem
    _, grads = default_gradient
    errors = grad_check.finite_difference_check(meta_params, tasks, grads)
    _assert_close(errors, "float64 finite differences")


# The PyTorch reference is not checked against finite differences on its own here: the
# float32 agreement above and maml_jax's agreement with finite differences tie it down.


# First order is computed in closed form (maml.first_order_meta_gradient), not by reverse
# mode through the stopped inner loop: at the real size, in float64, against PyTorch's
# first-order step (an independent implementation, task by task with autograd).
@pytest.mark.xdist_group("full_size_first_order")
def test_first_order_closed_form_matches_pytorch_float64(problem):
    meta_params, model_state, tasks = problem
    setting = dataclasses.replace(grad_check.SETTING, first_order=True)
    with jax.enable_x64(True):
        fn = grad_check.meta_grad_function("default", dtype="float64", setting=setting)
        loss, grads = fn(meta_params, model_state, tasks)
    t_loss, t_grads = grad_check.torch_grads(meta_params, tasks, setting=setting)
    assert loss == pytest.approx(t_loss, rel=1e-8)
    _assert_close(grad_check.relative_errors(grads, t_grads), "PyTorch first order, float64",
                  formulation_consistency.TOLERANCE_F64)


# The second reference (unroll 1 and flax's max-pool), here also with remat; and the
# CPU defaults with the tasks in two groups (MetaConfig.task_groups=2, one task each here).
# ``python benchmarks/grad_check.py --variants all`` checks all 32 combinations of
# convolution x batching x unroll x remat x pool (lax.conv and lax.map included).
VARIANTS = [
    "patches:vmap:1:1:reduce_window",
    "patches:vmap:5:0:select:2",
]


@DEFAULT_GROUP  # one worker: the module's fixtures (PyTorch float64 reference) are built once
@pytest.mark.parametrize("variant", VARIANTS)
def test_other_formulations_match_pytorch_reference(problem, torch_reference, variant):
    _, grads, _ = grad_check.jax_grads(variant, *problem, dtype="float32")
    _assert_close(grad_check.relative_errors(grads, torch_reference[1]), "PyTorch float64")


# The default formulation against the plain one (lax.conv, lax.map, unroll 1) with the MSL
# weights of epoch 0: the setting where a review saw them 2.6e-3 apart in float32 on another
# instance. In float64 they are the same function, checked here; in float32 they agree
# where no jump of the piecewise-smooth meta-loss intervenes, which `make check-full`
# (benchmarks/formulation_consistency.py) judges for every formulation on the check
# instance, and reports on 12 more (40 s of this suite's budget on 2 cores: not here).
@pytest.mark.xdist_group("full_size_plain")
@pytest.mark.parametrize("dtype, tol", [("float64", formulation_consistency.TOLERANCE_F64)])
def test_default_formulation_matches_the_plain_one(problem, dtype, tol):
    with jax.enable_x64(dtype == "float64"):
        default, plain = (grad_check.meta_grad_function(v, dtype=dtype, epoch=0)(*problem)[1]
                          for v in ("default", formulation_consistency.PLAIN))
    _assert_close(grad_check.relative_errors(default, plain),
                  f"the plain formulation ({dtype})", tol)
