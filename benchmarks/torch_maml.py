"""The MAML++ outer step of the benchmarks, in PyTorch, in the formulations a PyTorch user
would run:

* ``"sequential"``: the reference implementation's, tasks one after another, each inner step
  ``torch.autograd.grad(create_graph=True)`` (``meta_loss``, ``TorchMAMLpp``);
* ``"vmap"``: every task at once, as the PyTorch documentation's own MAML example
  (functorch's ``maml-omniglot-transforms``) and TorchOpt's ``maml_omniglot_vmap`` do:
  ``torch.func.grad`` for each inner step inside ``torch.vmap`` over the task axis, the
  outer gradient by ``.backward()`` (``vmapped_meta_loss``). Batch norm in training mode
  without running statistics is vmap-safe, and is what the reference computes: it always
  normalises with the batch's statistics (its running statistics never enter the loss);
* ``"vmap+compile"``: the vmapped loss under ``torch.compile`` (the backward pass of a
  second-order step runs eagerly: ``torch.compile`` does not compile double backward).

Model: Conv4 as ``maml_jax.models.Conv4`` -- four blocks of 3x3 conv (padding 1) ->
batch norm with batch statistics and per-step weights ``(num_steps, C)`` -> LeakyReLU(0.01)
-> 2x2 max-pool (VALID), then a linear head. Inner loop per task: for step i, support loss
with BN index i, ``theta <- theta - alpha[layer][i] * grad`` (BN weights are not adapted),
query loss with BN index i after the update, weighted by the MSL weight i. The outer loss
is the mean over tasks; Adam updates the parameters, the alphas and the BN weights.

Parameters are a flat dict named like the JAX pytree (``"conv0/kernel"``, ...), loaded from
the JAX params with ``params_from_jax`` (HWIO kernels -> OIHW; the head's input features
permuted from JAX's HWC flattening to torch's CHW flattening).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _flatten_tree(tree: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k in sorted(tree):
        v = tree[k]
        name = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "keys"):
            out.update(_flatten_tree(v, name + "/"))
        else:
            out[name] = v
    return out


def params_from_jax(params: Any, inner_lrs: Any | None = None, *, dtype=torch.float32,
                    device: str | torch.device = "cpu"):
    """Converts maml_jax Conv4 params (and inner learning rates) to torch tensors.

    Returns ``(params, alphas)``: dicts name -> leaf tensor requiring grad; ``alphas`` holds
    a ``(num_steps,)`` tensor per inner-loop-adapted parameter (``None`` rates are omitted).
    """
    flat = {k: np.asarray(v) for k, v in _flatten_tree(params).items()}
    out = {}
    for name, v in flat.items():
        value = v
        if name.startswith("conv") and name.endswith("/kernel"):
            value = np.transpose(v, (3, 2, 0, 1))  # HWIO -> OIHW
        elif name == "head/kernel":
            in_features, classes = v.shape
            c = flat[[k for k in flat
                      if k.startswith("conv") and k.endswith("/kernel")][-1]].shape[-1]
            hw = in_features // c
            side = round(hw ** 0.5)
            # JAX flattens (H, W, C); torch flattens (C, H, W). Linear weight is (out, in).
            value = v.reshape(side, side, c, classes).transpose(3, 2, 0, 1).reshape(classes, -1)
        out[name] = torch.tensor(np.ascontiguousarray(value), dtype=dtype, device=device,
                                 requires_grad=True)
    alphas = {}
    if inner_lrs is not None:
        flat_lrs = _flatten_tree(_drop_none(inner_lrs))
        for name, v in flat_lrs.items():
            alphas[name] = torch.tensor(np.asarray(v), dtype=dtype, device=device,
                                        requires_grad=True)
    return out, alphas


def _drop_none(tree):
    if isinstance(tree, dict) or hasattr(tree, "keys"):
        return {k: _drop_none(v) for k, v in tree.items() if v is not None}
    return tree


def grads_to_jax_layout(grads: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Converts torch-layout gradients back to the JAX layout (for comparisons)."""
    out = {}
    for name, g in grads.items():
        v = g.detach().cpu().numpy()
        if name.startswith("conv") and name.endswith("/kernel"):
            v = np.transpose(v, (2, 3, 1, 0))  # OIHW -> HWIO
        elif name == "head/kernel":
            classes, in_features = v.shape
            c = grads[[k for k in grads
                       if k.startswith("conv") and k.endswith("/kernel")][-1]].shape[0]
            side = round((in_features // c) ** 0.5)
            v = v.reshape(classes, c, side, side).transpose(2, 3, 1, 0).reshape(-1, classes)
        out[name] = v
    return out


def num_blocks(params: dict[str, torch.Tensor]) -> int:
    return sum(1 for k in params if k.startswith("conv") and k.endswith("/kernel"))


def conv4_forward(params: dict[str, torch.Tensor], x: torch.Tensor, step: int,
                  running: dict[str, torch.Tensor] | None = None,
                  momentum: float = 0.1) -> torch.Tensor:
    """Conv4 on NCHW ``x`` with the BN weights of inner step ``step`` (batch statistics).

    ``running``: optional per-step running statistics ``{"norm{i}/mean": (N, C), ...}``
    updated in place, as the reference's per-step BN (no effect on the output).
    """
    h = x
    for i in range(num_blocks(params)):
        h = F.conv2d(h, params[f"conv{i}/kernel"], params[f"conv{i}/bias"], padding=1)
        rm = rv = None
        if running is not None:
            rm, rv = running[f"norm{i}/mean"][step], running[f"norm{i}/var"][step]
        h = F.batch_norm(h, rm, rv, weight=params[f"norm{i}/scale"][step],
                         bias=params[f"norm{i}/bias"][step], training=True,
                         momentum=momentum, eps=1e-5)
        h = F.leaky_relu(h, 0.01)
        h = F.max_pool2d(h, 2, 2)
    h = h.flatten(1)
    return F.linear(h, params["head/kernel"], params["head/bias"])


def msl_weights(epoch: int, num_steps: int, msl_epochs: int) -> np.ndarray:
    """The MAML++ reference's annealed multi-step loss weights (as core.msl_weights)."""
    n = num_steps
    w = np.full(n, 1.0 / n, np.float64)
    if epoch >= msl_epochs:
        w[:] = 0
        w[-1] = 1
        return w
    decay = 1.0 / n / msl_epochs
    min_non_final = 0.03 / n
    w[:-1] = np.maximum(w[:-1] - epoch * decay, min_non_final)
    w[-1] = min(w[-1] + epoch * (n - 1) * decay, 1.0 - (n - 1) * min_non_final)
    return w


def task_loss(params, alphas, xs, ys, xq, yq, *, num_steps: int, step_weights: Iterable[float],
              first_order: bool, msl: bool = True, running=None):
    """One task's (multi-step) query loss after ``num_steps`` inner steps."""
    names = [n for n in params if n in alphas]
    fast = dict(params)
    total = 0.0
    weights = list(step_weights)
    for i in range(num_steps):
        s_loss = F.cross_entropy(conv4_forward(fast, xs, i, running), ys)
        grads = torch.autograd.grad(s_loss, [fast[n] for n in names],
                                    create_graph=not first_order,
                                    retain_graph=not first_order)
        for n, g in zip(names, grads, strict=True):
            fast[n] = fast[n] - alphas[n][i] * g
        if msl or i == num_steps - 1:
            q_loss = F.cross_entropy(conv4_forward(fast, xq, i, running), yq)
            total = total + (weights[i] if msl else 1.0) * q_loss
    return total


def meta_loss(params, alphas, tasks, *, num_steps: int, step_weights, first_order: bool,
              msl: bool = True, running=None):
    """Mean task loss over a batch of tasks, processed one after another."""
    (xs, ys), (xq, yq) = tasks
    losses = [task_loss(params, alphas, xs[t], ys[t], xq[t], yq[t], num_steps=num_steps,
                        step_weights=step_weights, first_order=first_order, msl=msl,
                        running=running)
              for t in range(xs.shape[0])]
    return torch.stack(losses).mean()


def vmapped_meta_loss(params, alphas, tasks, *, num_steps: int, step_weights,
                      first_order: bool, msl: bool = True):
    """The mean task loss with every task at once: ``torch.vmap`` over the task axis of a
    per-task function whose inner steps are ``torch.func.grad`` of the support loss.

    Second order through regular autograd: ``torch.func.grad`` is differentiable, so the
    outer ``.backward()`` (or ``torch.autograd.grad``) reaches ``params`` and ``alphas``
    through every inner step; first order detaches each inner gradient. No running
    statistics (the reference's never enter the loss; in-place updates are not
    vmap-safe).
    """
    from torch.func import grad, vmap

    names = [n for n in params if n in alphas]
    frozen = {n: p for n, p in params.items() if n not in alphas}
    weights = [float(w) for w in step_weights]

    def support_loss(fast, xs, ys, i):
        return F.cross_entropy(conv4_forward({**frozen, **fast}, xs, i), ys)

    def one_task(xs, ys, xq, yq):
        fast = {n: params[n] for n in names}
        total = 0.0
        for i in range(num_steps):
            g = grad(support_loss)(fast, xs, ys, i)
            if first_order:
                g = {n: v.detach() for n, v in g.items()}
            fast = {n: fast[n] - alphas[n][i] * g[n] for n in names}
            if msl or i == num_steps - 1:
                q_loss = F.cross_entropy(conv4_forward({**frozen, **fast}, xq, i), yq)
                total = total + (weights[i] if msl else 1.0) * q_loss
        return total

    (xs, ys), (xq, yq) = tasks
    return vmap(one_task)(xs, ys, xq, yq).mean()


#: The formulations of the step: ``TorchMAMLpp(formulation=...)``.
FORMULATIONS = ("sequential", "vmap", "vmap+compile")


def meta_grads(params, alphas, tasks, *, formulation: str = "sequential", **kw):
    """``(loss, grads)`` of the meta loss w.r.t. params and alphas (dict name -> tensor,
    alphas under ``"lr:" + name``), tasks in sequence or vmapped."""
    loss_fn = {"sequential": meta_loss, "vmap": vmapped_meta_loss}[formulation]
    loss = loss_fn(params, alphas, tasks, **kw)
    keys = list(params) + ["lr:" + n for n in alphas]
    leaves = list(params.values()) + list(alphas.values())
    grads = torch.autograd.grad(loss, leaves)
    return loss, dict(zip(keys, grads, strict=True))


class TorchMAMLpp:
    """The outer step: the meta loss over the tasks (``formulation``: one of
    ``FORMULATIONS``), backward, Adam.

    ``compile_mode`` is ``torch.compile``'s mode for ``"vmap+compile"`` (None: its default;
    ``"reduce-overhead"``: CUDA graphs, on GPUs).
    """

    def __init__(self, params, alphas, *, num_steps: int, first_order: bool = False,
                 msl: bool = True, msl_epochs: int = 10, outer_lr: float = 1e-3,
                 epoch: int = 0, formulation: str = "sequential",
                 compile_mode: str | None = None):
        if formulation not in FORMULATIONS:
            raise ValueError(f"unknown formulation {formulation!r}; expected {FORMULATIONS}")
        self.params, self.alphas = params, alphas
        self.num_steps, self.first_order, self.msl = num_steps, first_order, msl
        self.formulation = formulation
        self.step_weights = [float(w) for w in msl_weights(epoch, num_steps, msl_epochs)]
        like = next(iter(params.values()))
        self.running = {}
        for n, p in params.items():
            if n.startswith("norm") and n.endswith("/scale"):
                base = n.split("/")[0]
                self.running[f"{base}/mean"] = torch.zeros(p.shape, dtype=like.dtype,
                                                           device=like.device)
                self.running[f"{base}/var"] = torch.ones(p.shape, dtype=like.dtype,
                                                         device=like.device)
        self.opt = torch.optim.Adam(list(params.values()) + list(alphas.values()), lr=outer_lr)
        self._vmapped = None
        if formulation != "sequential":
            loss = functools.partial(vmapped_meta_loss, num_steps=num_steps,
                                     step_weights=self.step_weights, first_order=first_order,
                                     msl=msl)
            self._vmapped = (loss if formulation == "vmap" else
                             torch.compile(loss, **({} if compile_mode is None
                                                    else {"mode": compile_mode})))

    def loss(self, tasks) -> torch.Tensor:
        """The meta loss of ``tasks`` (differentiable w.r.t. the parameters and rates)."""
        if self._vmapped is not None:
            return self._vmapped(self.params, self.alphas, tasks)
        return meta_loss(self.params, self.alphas, tasks, num_steps=self.num_steps,
                         step_weights=self.step_weights, first_order=self.first_order,
                         msl=self.msl, running=self.running)

    def step(self, tasks) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(tasks)
        loss.backward()
        self.opt.step()
        return loss.detach()


def tasks_to_torch(tasks, *, dtype=torch.float32, device="cpu"):
    """((xs, ys), (xq, yq)) NHWC numpy with a task axis -> NCHW torch tensors."""
    (xs, ys), (xq, yq) = tasks

    def img(a):
        return torch.tensor(np.ascontiguousarray(np.transpose(np.asarray(a), (0, 1, 4, 2, 3))),
                            dtype=dtype, device=device)

    def lab(a):
        return torch.tensor(np.asarray(a), dtype=torch.long, device=device)

    return (img(xs), lab(ys)), (img(xq), lab(yq))
