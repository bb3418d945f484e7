"""Scale-out: tasks over devices (and hosts), seeds as a batch axis, with ``jax.sharding``.

One ``Mesh`` with two axes, ``("seeds", "tasks")``:

* ``tasks``: data parallelism over the meta-batch. The step is the ordinary jitted
  ``meta.train_steps``; the only change is a sharding constraint on the sampled task batch
  (``task_sharding``), after which the compiler (GSPMD) partitions the per-task work along
  the batch, keeps the meta-parameters and the optimiser state replicated, and turns the
  mean over tasks into an all-reduce of the meta-gradient. We chose ``jax.jit`` with
  shardings over ``shard_map`` + ``pmean`` because the step is then literally the same
  function on one device and on many: no per-device code path to keep in sync, tasks are
  drawn from the same ``fold_in(rng, step)`` key whatever the device count (a sharded run
  is the single-device run, which the tests check), and one device gets no constraint at
  all (no cost). ``lax.map`` task batching, which cannot be partitioned along its loop,
  is run as ``vmap`` over the device shards of a ``lax.map`` over each shard's tasks.
* ``seeds``: a population of S independent meta-learners in one program
  (``population_train_steps``): ``jax.vmap`` over a leading axis of the ``MetaState``
  (different initialisations and task streams per seed), optionally sharded along the
  ``seeds`` mesh axis. Small models such as Conv4 leave an accelerator mostly idle, which
  the extra seeds can use (``benchmarks/scale_out.py``; on a busy 2-core CPU there is no
  idle capacity and a population is slower per seed than one run).

Several hosts: call ``jax.distributed.initialize`` first (``experiments.train`` does it from
flags or the environment); ``make_mesh`` then spans every process's devices and the same
code runs on each process (SPMD). Host arrays enter with ``replicate`` / ``shard_seeds``,
which give every process only the pieces its devices hold.

Example (then ``jit_train_steps(state, data, mesh=mesh, ...)``, see its docstring):
  >>> import jax.numpy as jnp
  >>> mesh = make_mesh()                       # every device on the "tasks" axis
  >>> check_meta_batch(8, mesh)                # the meta-batch splits over them
  >>> replicate({"w": jnp.ones(3)}, mesh)["w"].sharding.is_fully_replicated
  True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from maml_jax import meta
from maml_jax.task_batching import map_tasks

PyTree = Any

__all__ = [
    "SEEDS_AXIS",
    "TASKS_AXIS",
    "make_mesh",
    "task_sharding",
    "check_meta_batch",
    "replicate",
    "shard_seeds",
    "stack_states",
    "unstack_state",
    "host_array",
    "population_train_steps",
    "jit_train_steps",
    "evaluate_tasks_sharded",
    "device_memory_limit",
    "check_population_memory",
]

SEEDS_AXIS = "seeds"
TASKS_AXIS = "tasks"


def make_mesh(num_seed_shards: int = 1, devices: list | None = None) -> Mesh:
    """A ``("seeds", "tasks")`` mesh over ``devices`` (default: every device of every process).

    Args:
      num_seed_shards: devices along the ``seeds`` axis (a population's seeds are split
        over them); the rest go to the ``tasks`` axis.
      devices: the devices to use, default ``jax.devices()``.

    Raises:
      ValueError: if the device count is not a multiple of ``num_seed_shards``.

    Example:
      >>> make_mesh().shape        # on one device
      OrderedDict([('seeds', 1), ('tasks', 1)])
    """
    devices = list(jax.devices() if devices is None else devices)
    if num_seed_shards < 1 or len(devices) % num_seed_shards:
        raise ValueError(f"cannot split {len(devices)} devices into {num_seed_shards} seed "
                         f"shards: the device count must be a multiple of num_seed_shards")
    grid = np.array(devices, dtype=object).reshape(num_seed_shards, -1)
    return Mesh(grid, (SEEDS_AXIS, TASKS_AXIS))


def task_sharding(mesh: Mesh | None) -> NamedSharding | None:
    """The sharding of a task batch (leading task axis over ``tasks``); None = one device.

    ``None`` when the ``tasks`` axis has one device: the step then carries no constraint
    at all, so a one-device mesh costs nothing.
    """
    if mesh is None or mesh.shape[TASKS_AXIS] == 1:
        return None
    return NamedSharding(mesh, P(TASKS_AXIS))


def check_meta_batch(meta_batch_size: int, mesh: Mesh | None) -> None:
    """Raises a clear ``ValueError`` unless the meta-batch splits evenly over ``tasks``."""
    d = 1 if mesh is None else mesh.shape[TASKS_AXIS]
    if meta_batch_size % d:
        raise ValueError(f"the meta-batch of {meta_batch_size} tasks cannot be split evenly over "
                         f"{d} devices (mesh axis '{TASKS_AXIS}'): choose a meta-batch size "
                         f"that is a multiple of {d}, or fewer devices")


def _put(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """Host (or single-device) values -> global arrays with ``sharding``, on any process count.

    Every process must pass the same values; each one materialises only the shards its
    own devices hold (``jax.make_array_from_callback``), so this works with several hosts.
    An array that already has ``sharding`` is returned as it is; other global arrays are
    read with ``host_array`` (``np.asarray`` fails on arrays spanning several processes).
    """
    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        x = host_array(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(put, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copies a pytree to every device of ``mesh`` (meta-parameters, data, fixed tasks)."""
    return _put(tree, NamedSharding(mesh, P()))


def shard_seeds(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a population pytree (leading seed axis) split along the ``seeds`` mesh axis."""
    leaves = jax.tree.leaves(tree)
    s = mesh.shape[SEEDS_AXIS]
    if leaves and np.shape(leaves[0])[0] % s:
        raise ValueError(f"a population of {np.shape(leaves[0])[0]} seeds cannot be split over "
                         f"{s} devices (mesh axis '{SEEDS_AXIS}')")
    return _put(tree, NamedSharding(mesh, P(SEEDS_AXIS)))


def stack_states(states: list[PyTree]) -> PyTree:
    """Stacks S single-seed pytrees (e.g. ``MetaState``) into one with a leading seed axis."""
    if not states:
        raise ValueError("need at least one state to stack")
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)


def unstack_state(population: PyTree, index: int) -> PyTree:
    """Seed ``index`` of a population pytree, as host arrays."""
    return jax.tree.map(lambda x: host_array(x)[index], population)


def host_array(x: Any) -> np.ndarray:
    """A global array's full value on this host (gathers across processes when needed)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def population_train_steps(
    state: meta.MetaState,
    data: Any,
    *,
    spmd_axis_name: str | None = None,
    **train_steps_kwargs,
) -> tuple[meta.MetaState, dict[str, jax.Array]]:
    """``meta.train_steps`` for a population: ``vmap`` over the state's leading seed axis.

    Every seed has its own initial parameters and root key (``state.rng[s]``), so its own
    task stream; ``data`` is shared. The algorithm's phase (MAML's first order and MSL) is
    static, so all seeds are in the same epoch. Non-finite steps are skipped per seed
    (``skip_nonfinite``).

    Args:
      state: a ``MetaState`` whose every leaf has a leading axis of S seeds.
      data: the shared training data (no seed axis).
      spmd_axis_name: the mesh axis the seed axis is sharded along (``"seeds"``), so that
        sharding constraints inside the step get it prepended; None when not sharded.
      **train_steps_kwargs: the keyword arguments of ``meta.train_steps``.

    Returns:
      ``(state, metrics)``, both with the leading seed axis.
    """
    fn = functools.partial(meta.train_steps, **train_steps_kwargs)
    return jax.vmap(lambda st: fn(st, data), spmd_axis_name=spmd_axis_name)(state)


def _train_steps(state, data, *, mesh=None, population=False, **kwargs):
    kwargs["task_sharding"] = task_sharding(mesh)
    if not population:
        out = meta.train_steps(state, data, **kwargs)
        spec = P()
    else:
        sharded_seeds = mesh is not None and mesh.shape[SEEDS_AXIS] > 1
        out = population_train_steps(state, data,
                                     spmd_axis_name=SEEDS_AXIS if sharded_seeds else None,
                                     **kwargs)
        spec = P(SEEDS_AXIS) if sharded_seeds else P()
    if mesh is None:
        return out
    # State and metrics leave replicated (or split by seed): never split by task.
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, spec))


jit_train_steps = jax.jit(
    _train_steps,
    static_argnames=("mesh", "population", "sample_tasks", "num_steps", "loss_fn", "optimizer",
                     "config", "phase"),
    donate_argnames=("state",))
jit_train_steps.__doc__ = """``meta.train_steps`` under ``jax.jit`` (the state donated), on one
device or a mesh, for one learner or a population of seeds: the library's one compiled
training call.

Args (keyword, static): ``mesh``: None (the default device) or ``make_mesh()``, whose
``tasks`` axis splits the meta-batch; ``population``: the state has a leading seed axis
(``stack_states``), trained as ``population_train_steps``; and every keyword argument of
``meta.train_steps`` (``sample_tasks``, ``num_steps``, ``loss_fn``, ``optimizer``,
``config``, ``phase``).

Returns:
  ``(state, metrics)`` as ``meta.train_steps`` (with a leading seed axis for a population).

Example:
  >>> import jax, jax.numpy as jnp, maml_jax as mj
  >>> model = mj.MLP(hidden=(8,))
  >>> params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1)))["params"]
  >>> opt = mj.make_meta_optimizer(1e-3)
  >>> state = mj.init_meta_state(params, mj.init_inner_lrs(params, 1, 0.01), opt,
  ...                            jax.random.PRNGKey(1))
  >>> sample = lambda key, data: mj.sample_sinusoid_tasks(key, 4, 5, 5)
  >>> state, metrics = jit_train_steps(
  ...     state, None, sample_tasks=sample, num_steps=3,
  ...     loss_fn=mj.make_loss_fn(model, "mse"), optimizer=opt,
  ...     config=mj.MetaConfig(num_inner_steps=1), phase=(False, False))
  >>> int(state.step), metrics["loss"].shape
  (3, (3,))
"""


def evaluate_tasks_sharded(
    loss_fn: Callable,
    params: PyTree,
    inner_lrs: PyTree,
    tasks: tuple[Any, Any],
    *,
    num_steps: int,
    mesh: Mesh | None,
    batch_size: int | None = None,
    inner_grad_clip: float | None = None,
    algorithm: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``meta.evaluate_tasks`` with the tasks split over the mesh's ``tasks`` axis.

    Any number of tasks: the last shard is padded with copies of the first task, whose
    results are dropped. Same outputs as ``meta.evaluate_tasks``.
    """
    return _jit_evaluate_sharded(loss_fn, params, inner_lrs, tasks, num_steps=num_steps,
                                 sharding=task_sharding(mesh), batch_size=batch_size,
                                 inner_grad_clip=inner_grad_clip, algorithm=algorithm)


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_steps", "sharding", "batch_size",
                                             "inner_grad_clip", "algorithm"))
def _jit_evaluate_sharded(loss_fn, params, inner_lrs, tasks, *, num_steps, sharding, batch_size,
                          inner_grad_clip, algorithm):
    if sharding is None:
        return meta.evaluate_tasks(loss_fn, params, inner_lrs, tasks, num_steps=num_steps,
                                   batch_size=batch_size, inner_grad_clip=inner_grad_clip,
                                   algorithm=algorithm)
    # Each task alone (batch of one) through evaluate_tasks: the same per-task program.
    def one(task):
        losses, aux = meta.evaluate_tasks(loss_fn, params, inner_lrs,
                                          jax.tree.map(lambda x: x[None], task),
                                          num_steps=num_steps, inner_grad_clip=inner_grad_clip,
                                          algorithm=algorithm)
        return jax.tree.map(lambda x: x[0], (losses, aux))

    return map_tasks(one, tasks, sharding=sharding, batch_size=batch_size)


def device_memory_limit(device=None) -> int | None:
    """Bytes a device may allocate (``memory_stats()["bytes_limit"]``); None where the
    backend does not say (CPU)."""
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return None if not stats or "bytes_limit" not in stats else int(stats["bytes_limit"])


def check_population_memory(bytes_one_seed: int | None, num_seeds: int, mesh: Mesh | None, *,
                            shared_bytes: int = 0, limit: int | None = None) -> None:
    """Fails before the population's step is compiled if it cannot fit on a device.

    Estimate per device: ``shared_bytes + seeds_per_device * (bytes_one_seed - shared_bytes)``
    where ``bytes_one_seed`` is what one seed's compiled step needs (arguments, outputs and
    temporaries, from ``compiled.memory_analysis()``) and ``shared_bytes`` the part every
    seed shares (the training images). vmap over seeds scales every per-seed buffer by the
    seeds a device holds; XLA may fuse a little better, so this errs on the safe side.

    Args:
      bytes_one_seed: as above; None = not known (CPU): no check.
      num_seeds: the population size.
      mesh: the mesh (its ``seeds`` axis divides the population), or None.
      shared_bytes: bytes shared by all seeds.
      limit: device memory in bytes; default ``device_memory_limit()``.

    Raises:
      ValueError: with the estimate, the limit and the largest population that fits.
    """
    limit = device_memory_limit() if limit is None else limit
    if bytes_one_seed is None or limit is None:
        return
    shards = 1 if mesh is None else mesh.shape[SEEDS_AXIS]
    per_device = -(-num_seeds // shards)
    per_seed = max(bytes_one_seed - shared_bytes, 1)
    need = shared_bytes + per_device * per_seed
    if need > limit:
        fits = max(0, (limit - shared_bytes) // per_seed) * shards
        raise ValueError(
            f"a population of {num_seeds} seeds needs about {need / 2**30:.2f} GiB per device "
            f"({per_device} seeds per device x {per_seed / 2**30:.3f} GiB + "
            f"{shared_bytes / 2**30:.3f} GiB shared), more than the device's "
            f"{limit / 2**30:.2f} GiB: use at most {fits} seeds, or more devices on the "
            f"'{SEEDS_AXIS}' axis (seed_shards)")
