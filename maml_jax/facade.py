"""``ModelAgnosticMetaLearning``: the seed's quick-start class, a thin facade.

It only holds a ``MetaState`` and the static choices; every computation is a call to
``outer_step`` / ``evaluate_tasks``. Use those directly in your own JAX project.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maml_jax import core, losses, meta, model_adapters
from maml_jax.algorithms import MAML, Algorithm, make_algorithm

__all__ = ["ModelAgnosticMetaLearning"]

# The facade's step does not donate its state (jit_outer_step does): ``maml.params``,
# ``maml.state`` and the other views a user keeps stay valid after later steps.
_outer_step = jax.jit(meta.outer_step, static_argnames=meta.OUTER_STEP_STATIC)

_STATE_DIR = "state"        # save(path): the MetaState (orbax) ...
_SETTINGS_FILE = "facade.json"   # ... and what restore checks and needs to rebuild it
_FORMAT = 1
# Settings that saves from before they were recorded had, at their only value then.
_SAVED_BEFORE = {"algorithm": "MAML()"}


def _orbax():
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        raise ImportError("ModelAgnosticMetaLearning.save/restore write orbax checkpoints: "
                          "pip install 'maml_jax[checkpoint]' (or orbax-checkpoint)") from None
    return ocp


class ModelAgnosticMetaLearning:
    """MAML (``plus_plus=False``) or MAML++ (``plus_plus=True``) around a Flax model.

    MAML++ turns on: the annealed multi-step loss (MSL), learned per-layer per-step inner
    learning rates (LSLR), per-step batch-norm weights and statistics where the model has
    them (``num_steps``/``per_step_bn`` attributes, as ``Conv4``), and cosine annealing of
    the meta learning rate over ``total_epochs``. Plain MAML uses a fixed scalar alpha, the
    final-step loss, shared batch norm and a constant meta learning rate.

    Any linen model works, also with a standard ``nn.BatchNorm`` (built with
    ``use_running_average=False``): it normalises with each batch's statistics (as the
    reference), its weights are left out of the inner loop, and its running statistics keep
    their initial values (``StepBatchNorm`` reports its statistics and gets them updated).
    For an NNX model or a plain function use the functional API with ``nnx_model`` /
    ``apply_loss_fn``. On CPU, a model whose forward pass has a convolution is batched over
    tasks with ``lax.map`` (``task_batching="auto"``, see ``MetaConfig``).

    ``lr_granularity`` (default "layer_step" for MAML++, "scalar" for MAML) is any of
    ``GRANULARITIES``: "parameter" (per weight and step) and "meta_sgd" (per weight, shared
    by the steps) learn per-weight rates. ``rate_update`` says how the outer step moves the
    rates: a ``RATE_UPDATE_PRESETS`` name or "auto" (``default_rate_update``: "log_10x",
    Adam on log(rate) at 10x the meta learning rate, for per-weight rates; "reference", the
    MAML++ code's, otherwise); ``rate_update`` after construction names the one in force, as
    the ``repr`` does. ``inner_grad_clip`` bounds each inner gradient's global norm: a
    number, None (no clip, the reference) or "auto" (``default_inner_grad_clip``: 100 for
    per-weight rates, no clip otherwise).

    ``algorithm`` selects another meta-learning algorithm (``maml_jax.algorithms``), e.g.
    ``algorithm=mj.algorithms.Reptile()`` or ``algorithm="reptile"`` (a registered name, its
    default settings): the same model, data and calls, the outer step that
    algorithm's (the MAML++ switches above then set the rates and the meta learning rate
    only). None (the default) is MAML / MAML++.

    A Conv4 classifier is the same with ``Conv4(num_classes=5)``, images and integer labels.

    Attributes:
      state: the ``MetaState`` (``step``, ``meta_params = {"params", "inner_lrs"}``,
        ``opt_state``, ``model_state``, ``rng``), None before the first step (or ``init``).
        Its arrays stay valid after later steps (the facade never donates them), so a
        snapshot ``s = maml.state`` can be read by the functional API (``evaluate_tasks``,
        orbax); ``params`` and ``inner_lrs`` are views of it. ``jit_outer_step`` donates
        what it is given: train a copy there (``jax.tree.map(jnp.copy, s)``), never the
        facade's own state.
      config: the static ``MetaConfig`` of the steps.
      optimizer: the meta-optimizer (``make_meta_optimizer``).
      rate_update: the ``RATE_UPDATE_PRESETS`` name the rates are learned with.
      last_metrics: the metrics of the last ``meta_train_step`` (host arrays).

    Save and resume: ``maml.save(path)``, then ``restore(path)`` on a facade built with the
    same arguments (an exact resume; the facade cannot be pickled).

    Example:
      >>> import maml_jax as mj
      >>> maml = ModelAgnosticMetaLearning(mj.MLP(hidden=(16,)), inner_lr=0.01, loss="mse")
      >>> (xs, ys), (xq, yq) = mj.sample_sinusoid_tasks(jax.random.PRNGKey(0), 4, 5, 5)
      >>> loss = maml.meta_train_step(xs, ys, xq, yq)   # a leading axis of 4 tasks
      >>> maml.step, sorted(maml.inner_lrs)             # the learned alphas, per layer
      (1, ['dense0', 'head'])
      >>> maml.adapt(xs[0], ys[0])["head"]["kernel"].shape
      (16, 1)
      >>> maml   # doctest: +NORMALIZE_WHITESPACE
      ModelAgnosticMetaLearning(MLP, plus_plus=True, inner_steps=5, inner_lr=0.01,
          outer_lr=0.001, lr_granularity='layer_step', rate_update='reference',
          inner_grad_clip=None, loss='mse', step=1)
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.01,
        outer_lr: float = 0.001,
        inner_steps: int = 5,
        plus_plus: bool = True,
        *,
        loss: str = "cross_entropy",
        first_order: bool = False,
        first_order_epochs: int = 0,
        msl_epochs: int = 10,
        iterations_per_epoch: int = 500,
        total_epochs: int = 100,
        min_outer_lr: float = 1e-5,
        lr_granularity: str | None = None,
        rate_update: str = "auto",
        inner_grad_clip: float | str | None = "auto",
        task_batching: str = "auto",
        algorithm: Algorithm | str | None = None,
        seed: int = 0,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ModelAgnosticMetaLearning wraps a flax.linen module, got {type(model).__name__}; "
                "for an NNX module or a plain function use the functional API with "
                "maml_jax.nnx_model / maml_jax.apply_loss_fn (docs/your-own-model.md)")
        losses.check_loss_name(loss)
        core.check_positive(inner_lr, "inner_lr (the initial inner learning rate)")
        core.check_positive(outer_lr, "outer_lr (the meta learning rate)")
        if isinstance(algorithm, str):   # a registered name, with its default settings
            algorithm = make_algorithm(algorithm)
        granularity = lr_granularity or ("layer_step" if plus_plus else "scalar")
        if granularity not in core.GRANULARITIES:
            raise ValueError(f"unknown granularity {granularity!r}; expected {core.GRANULARITIES}")
        # MAML++ is every component on; plain MAML every one off (as the experiment
        # configs build them, through the same make_outer_loop).
        loop = meta.make_outer_loop(
            lr_granularity=granularity, num_inner_steps=inner_steps, msl=plus_plus,
            msl_epochs=msl_epochs, first_order=first_order,
            first_order_epochs=first_order_epochs, learn_inner_lrs=plus_plus,
            meta_lr=outer_lr, lr_schedule="cosine" if plus_plus else "constant",
            min_meta_lr=min_outer_lr, num_epochs=total_epochs,
            iterations_per_epoch=iterations_per_epoch, rate_update=rate_update,
            inner_grad_clip=inner_grad_clip, task_batching=task_batching,
            algorithm=algorithm)
        if hasattr(model, "num_steps") and hasattr(model, "per_step_bn"):
            model = model.clone(num_steps=inner_steps, per_step_bn=plus_plus)
        self.model = model
        self.loss = loss
        self.plus_plus = plus_plus
        self.inner_lr = inner_lr
        self.granularity = granularity
        self.config = loop.config
        self.optimizer = loop.optimizer
        self.rate_update = loop.rate_update
        # What save records and restore compares: the arguments, "auto" resolved.
        self._settings = {
            "model": repr(model), "inner_lr": inner_lr, "outer_lr": outer_lr,
            "inner_steps": inner_steps, "plus_plus": plus_plus, "loss": loss,
            "first_order": first_order, "first_order_epochs": first_order_epochs,
            "msl_epochs": msl_epochs, "iterations_per_epoch": iterations_per_epoch,
            "total_epochs": total_epochs, "min_outer_lr": min_outer_lr,
            "lr_granularity": granularity, "rate_update": loop.rate_update,
            "inner_grad_clip": loop.config.inner_grad_clip, "task_batching": task_batching,
            "algorithm": repr(loop.config.algorithm)}
        # Built once so the jitted step sees the same static function every call.
        self.loss_fn = model_adapters.make_loss_fn(model, loss, collect_bn_stats=True)
        self._rng = jax.random.PRNGKey(seed)
        self.state: meta.MetaState | None = None
        self.last_metrics: dict[str, Any] = {}
        self._example: tuple[tuple[int, ...], str] | None = None  # one task's inputs
        self._num_outputs: int | None = None

    def __repr__(self) -> str:
        s = self._settings
        return (f"{type(self).__name__}({type(self.model).__name__}, "
                f"plus_plus={s['plus_plus']}, inner_steps={s['inner_steps']}, "
                f"inner_lr={s['inner_lr']}, outer_lr={s['outer_lr']}, "
                f"lr_granularity={s['lr_granularity']!r}, rate_update={s['rate_update']!r}, "
                f"inner_grad_clip={s['inner_grad_clip']}, loss={s['loss']!r}, "
                + ("" if isinstance(self.config.algorithm, MAML)
                   else f"algorithm={s['algorithm']}, ")
                + f"step={self.step})")

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled (its optimizer and loss are "
                        "closures): use maml.save(path) and, on a facade built with the same "
                        "arguments, restore(path)")

    # -- state -------------------------------------------------------------------------
    def init(self, example_input: Any) -> meta.MetaState:
        """Initialises parameters from one task's example inputs (called lazily)."""
        init_key, run_key = jax.random.split(self._rng)
        # One compiled init instead of the forward pass op by op.
        example_input = jnp.asarray(example_input)
        variables = jax.jit(self.model.init)(init_key, example_input)
        params = variables["params"]
        outputs = jax.eval_shape(lambda v, x: self.model.apply(v, x, mutable=True)[0],
                                 variables, example_input)
        self._example = (tuple(example_input.shape), str(example_input.dtype))
        self._num_outputs = outputs.shape[-1] if outputs.ndim else 1
        mask = model_adapters.inner_loop_mask(variables)
        lrs = core.init_inner_lrs(params, self.config.num_inner_steps, self.inner_lr,
                                  self.granularity, mask=mask)
        self.state = meta.init_meta_state(params, lrs, self.optimizer, run_key,
                                          model_state=variables.get("batch_stats", {}))
        return self.state

    @property
    def step(self) -> int:
        return 0 if self.state is None else int(self.state.step)

    @property
    def epoch(self) -> int:
        return self.step // self.config.iterations_per_epoch

    @property
    def params(self) -> Any:
        return None if self.state is None else self.state.meta_params["params"]

    @property
    def inner_lrs(self) -> Any:
        """The (learned) inner learning rates, a pytree mirroring the params."""
        return None if self.state is None else self.state.meta_params["inner_lrs"]

    def save(self, path: str | pathlib.Path, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the whole state (orbax) and the facade's settings into directory ``path``.

        Args:
          path: a directory to create.
          overwrite: replace an earlier ``save`` at ``path`` (only a directory that holds
            one is removed).

        Returns:
          The absolute path written.

        Raises:
          RuntimeError: nothing to save yet.
          FileExistsError: ``path`` exists (without ``overwrite``, or it is not a saved
            facade).
        """
        self._require_state()
        ocp = _orbax()
        path = pathlib.Path(path).absolute()
        if path.exists():
            if not (overwrite and (path / _SETTINGS_FILE).is_file()):
                raise FileExistsError(
                    f"{path} exists: save into a new directory" + (
                        "" if overwrite else ", or pass overwrite=True to replace an earlier "
                        "save there"))
            shutil.rmtree(path)
        path.mkdir(parents=True)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(path / _STATE_DIR, self.state)
            checkpointer.wait_until_finished()
        shape, dtype = self._example
        (path / _SETTINGS_FILE).write_text(json.dumps(
            {"format": _FORMAT, "settings": self._settings, "step": self.step,
             "example_input": {"shape": list(shape), "dtype": dtype}}, indent=1))
        return path

    def restore(self, path: str | pathlib.Path) -> ModelAgnosticMetaLearning:
        """Loads a ``save``d state into this facade, which must have the same settings.

        Training then continues exactly as the saved run would have: the same losses for
        the same tasks. Returns the facade, for ``maml = ModelAgnosticMetaLearning(...)
        .restore(path)``.

        Raises:
          FileNotFoundError: ``path`` holds no saved facade.
          ValueError: naming every setting (model, rates, schedule ...) that differs from
            the saved run's.
        """
        ocp = _orbax()
        path = pathlib.Path(path).absolute()
        if not (path / _SETTINGS_FILE).is_file():
            raise FileNotFoundError(f"{path} holds no saved ModelAgnosticMetaLearning "
                                    f"({_SETTINGS_FILE} missing): write one with maml.save")
        saved = json.loads((path / _SETTINGS_FILE).read_text())
        # Through JSON so that a tuple compares with the list it was saved as.
        mine = json.loads(json.dumps(self._settings))
        theirs = {**_SAVED_BEFORE, **saved["settings"]}
        diffs = [f"{k}: saved {theirs.get(k)!r}, here {v!r}"
                 for k, v in mine.items() if theirs.get(k) != v]
        if diffs:
            raise ValueError(f"the facade saved at {path} was built with other settings; "
                             "build this one with the same arguments. Differences: "
                             + "; ".join(diffs))
        example = saved["example_input"]
        self.init(np.zeros(example["shape"], example["dtype"]))  # the state's structure
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.state)
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path / _STATE_DIR, abstract)
        # Through the host: arrays like a fresh state's (orbax returns them committed to a
        # device, which jit would compile a second program for).
        self.state = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), restored)
        self.last_metrics = {}
        return self

    # -- training ----------------------------------------------------------------------
    def meta_train_step(self, support_data, support_labels, query_data, query_labels) -> float:
        """One meta-update on a batch of tasks; returns the meta loss.

        Args:
          support_data: support inputs with a leading task axis, e.g.
            ``(tasks, N*K, 28, 28, 1)``.
          support_labels: support labels, e.g. ``(tasks, N*K)``.
          query_data: query inputs, shaped as ``support_data``.
          query_labels: query labels, shaped as ``support_labels``.

        Raises:
          ValueError: mismatched shapes, no tasks or no examples, labels outside the
            model's classes (checked on the host, before anything is compiled).
          NonFiniteLossError: the loss or meta-gradient was not finite (state unchanged).
        """
        tasks = ((jnp.asarray(support_data), jnp.asarray(support_labels)),
                 (jnp.asarray(query_data), jnp.asarray(query_labels)))
        meta.validate_tasks(tasks)
        if self.state is None:
            self.init(tasks[0][0][0])
        self._check_labels(support_labels, query_labels)
        phase = meta.phase(self.config, self.epoch)
        step = self.step
        self.state, metrics = _outer_step(
            self.state, tasks, loss_fn=self.loss_fn, optimizer=self.optimizer,
            config=self.config, phase=phase)
        self.last_metrics = jax.device_get(metrics)
        meta.check_finite(self.last_metrics, step)
        return float(self.last_metrics["loss"])

    # -- inference ---------------------------------------------------------------------
    def _rates_for(self, num_steps: int | None) -> tuple[int, Any]:
        """``num_steps`` (default: meta-training's) and the rates for them: beyond the
        trained steps the last step's rates repeat (``extend_inner_lrs``)."""
        n = self.config.num_inner_steps if num_steps is None else num_steps
        return n, core.extend_inner_lrs(self.inner_lrs, n)

    def adapt(self, support_data, support_labels, num_steps: int | None = None) -> Any:
        """Adapted parameters for one task, or for each task of a batch of tasks.

        Args:
          support_data: one task's support inputs, e.g. ``(N*K, 28, 28, 1)``, or a batch of
            tasks with a leading task axis (then every leaf of the result has that task
            axis too: each task is adapted on its own).
          support_labels: the matching labels.
          num_steps: inner steps (default: those of meta-training); more than
            meta-training took repeat the last step's learned rates (``extend_inner_lrs``).
        """
        self._require_state()
        n, lrs = self._rates_for(num_steps)
        support = (jnp.asarray(support_data), jnp.asarray(support_labels))
        self._check_labels(support_labels)
        # The inner steps of the algorithm trained with (iMAML's are proximal).
        inner_loss = self.config.algorithm.support_objective(self.loss_fn, self.params)
        one_task = lambda s: core.adapt(inner_loss, self.params, lrs, s, num_steps=n,
                                        first_order=True, grad_clip=self.config.inner_grad_clip)
        rank = support[0].ndim
        example_rank = None if self._example is None else len(self._example[0])
        if example_rank is None or rank == example_rank:  # None: state set by hand
            return one_task(support)
        if rank == example_rank + 1:
            meta.validate_tasks((support, support))
            return jax.vmap(one_task)(support)
        raise ValueError(
            f"support_data of rank {rank} is neither one task (rank {example_rank}, "
            f"as the examples meta-training started with) nor a batch of tasks (rank "
            f"{example_rank + 1})")

    def evaluate(self, support_data, support_labels, query_data, query_labels,
                 num_steps: int | None = None) -> dict[str, np.ndarray]:
        """Query loss (and accuracy) after 0..num_steps inner steps, per task.

        ``num_steps`` as in ``adapt``.
        """
        self._require_state()
        tasks = ((jnp.asarray(support_data), jnp.asarray(support_labels)),
                 (jnp.asarray(query_data), jnp.asarray(query_labels)))
        meta.validate_tasks(tasks)
        self._check_labels(support_labels, query_labels)
        n, lrs = self._rates_for(num_steps)
        losses_, aux = meta.jit_evaluate_tasks(
            self.loss_fn, self.params, lrs, tasks, num_steps=n,
            inner_grad_clip=self.config.inner_grad_clip, algorithm=self.config.algorithm)
        out = {"loss": np.asarray(losses_)}
        out.update({k: np.asarray(v) for k, v in aux.items()})
        return out

    def _check_labels(self, support_labels, query_labels=None):
        """Class labels on the host: integers below the model's number of outputs."""
        if self.loss != "cross_entropy" or self._num_outputs is None:  # state set by hand
            return
        losses.check_labels(support_labels, self._num_outputs, what="support labels")
        if query_labels is not None:
            losses.check_labels(query_labels, self._num_outputs, what="query labels")

    def _require_state(self):
        if self.state is None:
            raise RuntimeError("call meta_train_step (or init) before adapting, evaluating "
                               "or saving")
