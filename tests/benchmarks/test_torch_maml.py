"""The benchmark's PyTorch MAML++ step (``benchmarks/torch_maml.py``, set up by
``benchmarks/jax_setup.py``) computes the same meta-gradient as maml_jax.

torch is a test requirement (``make test`` installs it): these tests fail, not skip,
without it. The same comparison at the real size is in
``tests/maml_jax/test_meta_full_size.py``; the alternative convolutions against
``lax.conv``: ``tests/maml_jax/test_models.py``.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "benchmarks"))


@pytest.fixture(scope="module")
def tiny():
    import jax_setup
    import torch  # a test requirement: fail loudly if it is missing
    import torch_maml

    # 36x36 images end in 2x2x8 features, so the head's HWC -> CHW permutation is tested.
    s = dataclasses.replace(jax_setup.SETTINGS["omniglot_5w1s"], ways=3, shots=1, queries=2,
                            meta_batch=2, inner_steps=2, image=36, filters=8)
    _, state, _, kw = jax_setup.build(s, conv_impl="auto", task_batching="auto", inner_lr=0.4)
    tasks = jax_setup.make_tasks(s, seed=3)
    return torch, jax_setup, torch_maml, s, state, kw, tasks


@pytest.mark.parametrize("formulation", ["sequential", "vmap"])
@pytest.mark.parametrize("first_order,msl", [(False, True), (True, False)],
                         ids=["second_order-msl", "first_order-final_step"])
def test_torch_step_matches_jax_meta_gradient(tiny, first_order, msl, formulation):
    """Tasks in sequence (the reference's way) and all tasks at once (torch.vmap of
    torch.func.grad, the PyTorch documentation's MAML example) against maml_jax."""
    torch, jax_setup, torch_maml, s, state, kw, tasks = tiny
    from maml_jax import core

    s = dataclasses.replace(s, first_order=first_order, msl=msl)
    grad_fn = jax_setup.meta_grad_fn(s, kw["loss_fn"], kw["config"])
    j_loss, j_grads = grad_fn(state.meta_params, state.model_state, tasks)

    params, alphas = torch_maml.params_from_jax(state.meta_params["params"],
                                                state.meta_params["inner_lrs"],
                                                dtype=torch.float64)
    epochs = kw["config"].msl_epochs
    weights = torch_maml.msl_weights(0, s.inner_steps, epochs)
    np.testing.assert_allclose(weights, np.asarray(core.msl_weights(0, s.inner_steps, epochs)),
                               rtol=1e-6)
    t_loss, t_grads = torch_maml.meta_grads(
        params, alphas, torch_maml.tasks_to_torch(tasks, dtype=torch.float64),
        num_steps=s.inner_steps, step_weights=weights, first_order=first_order, msl=msl,
        formulation=formulation)
    np.testing.assert_allclose(float(t_loss.detach()), float(j_loss), rtol=1e-5)

    t_params = torch_maml.grads_to_jax_layout({k: v for k, v in t_grads.items()
                                               if not k.startswith("lr:")})
    t_lrs = {k[3:]: v.numpy() for k, v in t_grads.items() if k.startswith("lr:")}
    j_params = torch_maml._flatten_tree(jax.device_get(j_grads["params"]))
    j_lrs = torch_maml._flatten_tree(torch_maml._drop_none(jax.device_get(j_grads["inner_lrs"])))
    assert set(t_params) == set(j_params) and set(t_lrs) == set(j_lrs)
    assert any(k.startswith("norm") for k in t_params)
    # JAX runs in float32, torch in float64. Conv biases before batch norm have an exactly
    # zero meta-gradient (float32 noise in JAX), hence an absolute floor from the largest
    # gradient entry.
    scale = max(np.abs(v).max() for v in list(t_params.values()) + list(t_lrs.values()))
    for name in sorted(j_params):
        np.testing.assert_allclose(j_params[name], t_params[name], rtol=1e-4,
                                   atol=1e-5 * scale, err_msg=name)
    for name in sorted(j_lrs):
        np.testing.assert_allclose(j_lrs[name], t_lrs[name], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg="alpha " + name)
    # The BN weights do receive a meta-gradient.
    assert np.abs(j_params["norm0/scale"]).max() > 0


@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_vmapped_torch_step_is_the_sequential_one_in_float64(tiny, first_order):
    """The vmapped formulation computes the sequential step's meta-gradient to rounding in
    float64 (the two differ only in how the tasks are batched)."""
    torch, _, torch_maml, s, state, _, tasks = tiny
    params, alphas = torch_maml.params_from_jax(state.meta_params["params"],
                                                state.meta_params["inner_lrs"],
                                                dtype=torch.float64)
    kw = dict(num_steps=s.inner_steps, step_weights=torch_maml.msl_weights(0, s.inner_steps, 10),
              first_order=first_order, msl=True)
    t_tasks = torch_maml.tasks_to_torch(tasks, dtype=torch.float64)
    seq_loss, seq = torch_maml.meta_grads(params, alphas, t_tasks, formulation="sequential", **kw)
    vm_loss, vm = torch_maml.meta_grads(params, alphas, t_tasks, formulation="vmap", **kw)
    assert abs(float(seq_loss.detach()) - float(vm_loss.detach())) < 1e-12
    # Conv biases feed batch norm with batch statistics: their exact meta-gradient is zero
    # and both values are rounding (1e-10), hence the absolute floor.
    scale = max(float(g.abs().max()) for g in seq.values())
    for name in seq:
        np.testing.assert_allclose(vm[name].numpy(), seq[name].numpy(), rtol=1e-9,
                                   atol=1e-9 * scale, err_msg=name)
    # An outer step of each (Adam on the same gradient) leaves the same parameters, but for
    # the conv biases, where Adam turns rounding into a step of about its learning rate.
    steps = {}
    for formulation in ("sequential", "vmap"):
        p, a = torch_maml.params_from_jax(state.meta_params["params"],
                                          state.meta_params["inner_lrs"], dtype=torch.float64)
        model = torch_maml.TorchMAMLpp(p, a, num_steps=s.inner_steps, first_order=first_order,
                                       formulation=formulation)
        model.step(t_tasks)
        steps[formulation] = {k: v.detach().numpy() for k, v in p.items()}
    for name in steps["sequential"]:
        if name.startswith("conv") and name.endswith("/bias"):
            continue
        np.testing.assert_allclose(steps["vmap"][name], steps["sequential"][name], rtol=1e-9,
                                   atol=1e-12, err_msg=name)
