"""``ModelAgnosticMetaLearning``: the seed's quick-start class, a thin facade.

It only holds a ``MetaState`` and the static choices; every computation is a call to
``jit_outer_step`` / ``evaluate_tasks``. Use those directly in your own JAX project.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from maml_jax import core, losses, meta, model_adapters

__all__ = ["ModelAgnosticMetaLearning"]


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
    rates: "reference", "log" (``RATE_UPDATE_PRESETS``) or "auto" (``default_rate_update``:
    "log" for per-weight rates, "reference" otherwise). ``inner_grad_clip`` bounds each inner
    gradient's global norm: a number, None (no clip, the reference) or "auto"
    (``default_inner_grad_clip``: 100 for per-weight rates, no clip otherwise).

    A Conv4 classifier is the same with ``Conv4(num_classes=5)``, images and integer labels.

    Example:
      >>> import maml_jax as mj
      >>> maml = ModelAgnosticMetaLearning(mj.MLP(hidden=(16,)), inner_lr=0.01, loss="mse")
      >>> (xs, ys), (xq, yq) = mj.sample_sinusoid_tasks(jax.random.PRNGKey(0), 4, 5, 5)
      >>> loss = maml.meta_train_step(xs, ys, xq, yq)   # a leading axis of 4 tasks
      >>> maml.step, sorted(maml.inner_lrs)             # the learned alphas, per layer
      (1, ['dense0', 'head'])
      >>> maml.adapt(xs[0], ys[0])["head"]["kernel"].shape
      (16, 1)
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
        seed: int = 0,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ModelAgnosticMetaLearning wraps a flax.linen module, got {type(model).__name__}; "
                "for an NNX module or a plain function use the functional API with "
                "maml_jax.nnx_model / maml_jax.apply_loss_fn (docs/your-own-model.md)")
        losses.check_loss_name(loss)
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
            inner_grad_clip=inner_grad_clip, task_batching=task_batching)
        if hasattr(model, "num_steps") and hasattr(model, "per_step_bn"):
            model = model.clone(num_steps=inner_steps, per_step_bn=plus_plus)
        self.model = model
        self.loss = loss
        self.plus_plus = plus_plus
        self.inner_lr = inner_lr
        self.granularity = granularity
        self.config = loop.config
        self.optimizer = loop.optimizer
        # Built once so the jitted step sees the same static function every call.
        self.loss_fn = model_adapters.make_loss_fn(model, loss, collect_bn_stats=True)
        self._rng = jax.random.PRNGKey(seed)
        self.state: meta.MetaState | None = None
        self.last_metrics: dict[str, Any] = {}
        self._example_ndim: int | None = None  # rank of one task's inputs, set by init
        self._num_outputs: int | None = None

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
        self._example_ndim = example_input.ndim
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
          ValueError: mismatched shapes.
          NonFiniteLossError: the loss or meta-gradient was not finite (state unchanged).
        """
        tasks = ((jnp.asarray(support_data), jnp.asarray(support_labels)),
                 (jnp.asarray(query_data), jnp.asarray(query_labels)))
        meta.validate_tasks(tasks)
        if self.state is None:
            self.init(tasks[0][0][0])
        self._check_labels(support_labels, query_labels)
        first_order, msl = meta.phase(self.config, self.epoch)
        step = self.step
        self.state, metrics = meta.jit_outer_step(
            self.state, tasks, loss_fn=self.loss_fn, optimizer=self.optimizer,
            config=self.config, first_order=first_order, msl=msl)
        self.last_metrics = jax.device_get(metrics)
        meta.check_finite(self.last_metrics, step)
        return float(self.last_metrics["loss"])

    # -- inference ---------------------------------------------------------------------
    def adapt(self, support_data, support_labels, num_steps: int | None = None) -> Any:
        """Adapted parameters for one task, or for each task of a batch of tasks.

        Args:
          support_data: one task's support inputs, e.g. ``(N*K, 28, 28, 1)``, or a batch of
            tasks with a leading task axis (then every leaf of the result has that task
            axis too: each task is adapted on its own).
          support_labels: the matching labels.
          num_steps: inner steps (default: those of meta-training).
        """
        self._require_state()
        n = num_steps or self.config.num_inner_steps
        lrs = core.extend_inner_lrs(self.inner_lrs, n)
        support = (jnp.asarray(support_data), jnp.asarray(support_labels))
        self._check_labels(support_labels)
        one_task = lambda s: core.adapt(self.loss_fn, self.params, lrs, s, num_steps=n,
                                        first_order=True, grad_clip=self.config.inner_grad_clip)
        rank = support[0].ndim
        if self._example_ndim is None or rank == self._example_ndim:  # None: state set by hand
            return one_task(support)
        if rank == self._example_ndim + 1:
            meta.validate_tasks((support, support))
            return jax.vmap(one_task)(support)
        raise ValueError(
            f"support_data of rank {rank} is neither one task (rank {self._example_ndim}, "
            f"as the examples meta-training started with) nor a batch of tasks (rank "
            f"{self._example_ndim + 1})")

    def evaluate(self, support_data, support_labels, query_data, query_labels,
                 num_steps: int | None = None) -> dict[str, np.ndarray]:
        """Query loss (and accuracy) after 0..num_steps inner steps, per task."""
        self._require_state()
        tasks = ((jnp.asarray(support_data), jnp.asarray(support_labels)),
                 (jnp.asarray(query_data), jnp.asarray(query_labels)))
        meta.validate_tasks(tasks)
        self._check_labels(support_labels, query_labels)
        losses_, aux = meta.jit_evaluate_tasks(
            self.loss_fn, self.params, self.inner_lrs, tasks,
            num_steps=num_steps or self.config.num_inner_steps,
            inner_grad_clip=self.config.inner_grad_clip)
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
            raise RuntimeError("call meta_train_step (or init) before adapting or evaluating")
