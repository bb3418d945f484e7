"""Sharded-versus-single-device checks, run by ``test_parallel.py`` (beside this file) in a
subprocess.

The subprocess gets 4 fake CPU devices (``--xla_force_host_platform_device_count``, which
must be set before JAX starts, hence not in the pytest process). It prints one JSON line
of measurements; the test asserts on them. Sinusoid MLP, so that it compiles in seconds.

    python tests/maml_jax/parallel_worker.py   # with XLA_FLAGS set as in test_parallel.py
"""

from __future__ import annotations

import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import maml_jax as mj
from maml_jax import meta, parallel

META_BATCH, K, STEPS = 8, 5, 3
MODEL = mj.MLP(hidden=(16, 16))
FAMILY = mj.SinusoidFamily(amplitude=(0.1, 1.0))  # small losses: a stable learned-rate SGD
LOSS_FN = mj.make_loss_fn(MODEL, "mse")
# Clipped SGD, not Adam: Adam's first update is about lr * sign(g), which turns last-bit
# differences of near-zero gradient entries (summation order across devices) into
# differences of 2 * lr; clipped SGD keeps the comparison well conditioned (and the
# learned rates' large first gradients from blowing up the inner loop).
OPTIMIZER = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1e-2))
METHODS = {
    "MAML": (meta.MetaConfig(num_inner_steps=2, msl=False, learn_inner_lrs=False), "scalar"),
    "MAML++": (meta.MetaConfig(num_inner_steps=2, msl=True, msl_epochs=5), "layer_step"),
}


def sample(key, data):
    del data
    return mj.sample_sinusoid_tasks(key, META_BATCH, K, K, FAMILY)


def init_state(method: str, seed: int) -> meta.MetaState:
    config, granularity = METHODS[method]
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    params = MODEL.init(init_key, jnp.zeros((1, 1)))["params"]
    lrs = mj.init_inner_lrs(params, config.num_inner_steps, 0.01, granularity)
    return meta.init_meta_state(params, lrs, OPTIMIZER, run_key)


def kwargs(method: str, batching: str) -> dict:
    config = METHODS[method][0]
    import dataclasses
    config = dataclasses.replace(config, task_batching=batching)
    return dict(sample_tasks=sample, num_steps=STEPS, loss_fn=LOSS_FN, optimizer=OPTIMIZER,
                config=config, phase=(False, config.msl))


def _floats(tree):
    return [parallel.host_array(x) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]


def max_abs_diff(a, b) -> float:
    """Largest difference over the float leaves (parameters, rates, optimiser state)."""
    return max(float(np.max(np.abs(x - y))) for x, y in zip(_floats(a), _floats(b), strict=True))


def max_abs(tree) -> float:
    return max(float(np.max(np.abs(x))) for x in _floats(tree))


def main() -> None:
    out = {"devices": jax.device_count()}
    data = jnp.zeros(())
    mesh = parallel.make_mesh()
    for method, batching in (("MAML", "vmap"), ("MAML++", "vmap"), ("MAML++", "map")):
        kw = kwargs(method, batching)
        single, _ = parallel.jit_train_steps(init_state(method, 0), data, **kw)
        st = parallel.replicate(init_state(method, 0), mesh)
        sharded, _ = parallel.jit_train_steps(st, parallel.replicate(data, mesh), mesh=mesh,
                                              population=False, **kw)
        name = f"{method}/{batching}"
        out[f"{name}/diff"] = max_abs_diff(single, sharded)
        out[f"{name}/scale"] = max_abs(single)
        out[f"{name}/moved"] = max_abs_diff(single, init_state(method, 0))
        out[f"{name}/state_spec"] = str(sharded.step.sharding.spec)
        if name == "MAML/vmap":  # the second call (with the returned state) does not recompile
            size = parallel.jit_train_steps._cache_size()
            parallel.jit_train_steps(sharded, parallel.replicate(data, mesh), mesh=mesh,
                                     population=False, **kw)
            out["recompiled_on_second_call"] = parallel.jit_train_steps._cache_size() != size
    # Partitioned, not replicated: one outer step on host-given tasks, per-device FLOPs.
    kw = kwargs("MAML++", "vmap")
    del kw["sample_tasks"], kw["num_steps"]
    tasks = sample(jax.random.PRNGKey(1), None)
    step = functools.partial(meta.outer_step, **kw)
    flops_single = jax.jit(step).lower(init_state("MAML++", 0), tasks).compile().cost_analysis()
    sharding = parallel.task_sharding(mesh)
    compiled = jax.jit(functools.partial(step, task_sharding=sharding)).lower(
        parallel.replicate(init_state("MAML++", 0), mesh),
        jax.device_put(tasks, sharding)).compile()
    out["flops_single"] = float(flops_single["flops"])
    out["flops_sharded_per_device"] = float(compiled.cost_analysis()["flops"])
    out["hlo_all_reduce"] = "all-reduce" in compiled.as_text()
    # Evaluation split over devices (13 tasks: padded to 16), against the plain one.
    state = init_state("MAML++", 0)
    ev_tasks = mj.sample_sinusoid_tasks(jax.random.PRNGKey(2), 13, K, 20, FAMILY)
    mp = state.meta_params
    lrs = mj.extend_inner_lrs(mp["inner_lrs"], 3)   # evaluated one step past training's
    ref = meta.jit_evaluate_tasks(LOSS_FN, mp["params"], lrs, ev_tasks, num_steps=3)
    got = parallel.evaluate_tasks_sharded(LOSS_FN, mp["params"], lrs,
                                          parallel.replicate(ev_tasks, mesh), num_steps=3,
                                          mesh=mesh, batch_size=2)
    out["eval_shape"] = list(got[0].shape)
    out["eval_diff"] = max_abs_diff(ref, got)
    # A population of 2 seeds (one per device on the seeds axis) against two single runs.
    mesh2 = parallel.make_mesh(num_seed_shards=2)
    kw = kwargs("MAML++", "vmap")
    pop = parallel.shard_seeds(parallel.stack_states([init_state("MAML++", s) for s in (0, 1)]),
                               mesh2)
    pop, pop_metrics = parallel.jit_train_steps(pop, parallel.replicate(data, mesh2), mesh=mesh2,
                                                population=True, **kw)
    out["population_spec"] = str(pop.step.sharding.spec)
    out["population_loss_shape"] = list(pop_metrics["loss"].shape)
    for s in (0, 1):
        single, _ = parallel.jit_train_steps(init_state("MAML++", s), data, **kw)
        out[f"population_seed{s}_diff"] = max_abs_diff(single, parallel.unstack_state(pop, s))
        out[f"population_seed{s}_scale"] = max_abs(single)
    # Same population without a mesh (one device): vmap only.
    pop1, _ = parallel.jit_train_steps(
        jax.tree.map(jnp.asarray, parallel.stack_states([init_state("MAML++", s) for s in (0, 1)])),
        data, mesh=None, population=True, **kw)
    out["population_nomesh_diff"] = max_abs_diff(pop1, pop)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
