"""maml_jax: functional MAML and MAML++ in JAX.

The public API is flat: ``from maml_jax import adapt, task_loss, outer_step, Conv4``.
Importing it never imports torch or tensorflow.
"""

from maml_jax import algorithms, parallel, task_batching
from maml_jax.algorithms import ALGORITHMS, Algorithm, make_algorithm
from maml_jax.core import (
    GRANULARITIES,
    adapt,
    check_positive,
    check_same_structure,
    clip_inner_grads,
    extend_inner_lrs,
    final_step_weights,
    init_inner_lrs,
    inner_step,
    msl_weights,
    split_loss_output,
    task_loss,
)
from maml_jax.data.sinusoid import SinusoidFamily, sample_sinusoid_tasks, sinusoid_eval_tasks
from maml_jax.facade import ModelAgnosticMetaLearning
from maml_jax.losses import (
    LABEL_ERRORS,
    LOSSES,
    accuracy,
    check_labels,
    label_errors,
    prediction_loss,
)
from maml_jax.meta import (
    INNER_LR_UPDATES,
    LR_SCHEDULES,
    OUTER_STEP_STATIC,
    PER_WEIGHT_INNER_GRAD_CLIP,
    QUERY_LABEL_ERRORS,
    RATE_UPDATE_PRESETS,
    SUPPORT_LABEL_ERRORS,
    InvalidLabelsError,
    MetaConfig,
    MetaState,
    NonFiniteLossError,
    OuterLoop,
    check_finite,
    default_inner_grad_clip,
    default_rate_update,
    evaluate_tasks,
    init_meta_state,
    inner_grad_clip_for,
    jit_evaluate_tasks,
    jit_outer_step,
    make_meta_optimizer,
    make_outer_loop,
    meta_gradient,
    meta_lr_schedule,
    outer_step,
    phase,
    rate_update_preset,
    train_steps,
    tree_all_finite,
    validate_tasks,
)
from maml_jax.model_adapters import (
    ModelParts,
    apply_loss_fn,
    inner_loop_mask,
    make_loss_fn,
    nnx_model,
)
from maml_jax.models import (
    CONV_IMPLS,
    MLP,
    POOL_IMPLS,
    Conv3x3,
    Conv4,
    StepBatchNorm,
    conv3x3_patches,
    max_pool_2x2,
    resolve_conv_impl,
)
from maml_jax.parallel import jit_train_steps
from maml_jax.task_batching import TASK_BATCHING

__version__ = "0.1.0"

__all__ = [
    # core maths
    "GRANULARITIES", "check_positive", "init_inner_lrs", "extend_inner_lrs", "clip_inner_grads",
    "inner_step", "adapt",
    "task_loss", "msl_weights", "final_step_weights", "split_loss_output",
    "check_same_structure",
    # outer loop
    "TASK_BATCHING", "MetaConfig", "MetaState", "init_meta_state", "meta_lr_schedule",
    "make_meta_optimizer", "INNER_LR_UPDATES", "RATE_UPDATE_PRESETS", "rate_update_preset",
    "default_rate_update", "PER_WEIGHT_INNER_GRAD_CLIP", "default_inner_grad_clip",
    "inner_grad_clip_for", "LR_SCHEDULES", "OuterLoop", "make_outer_loop", "phase",
    "meta_gradient", "outer_step", "OUTER_STEP_STATIC", "jit_outer_step", "train_steps",
    "jit_train_steps", "evaluate_tasks", "jit_evaluate_tasks", "validate_tasks",
    "check_finite", "tree_all_finite", "NonFiniteLossError", "InvalidLabelsError",
    "SUPPORT_LABEL_ERRORS", "QUERY_LABEL_ERRORS",
    # algorithms: one module each under maml_jax.algorithms (mj.algorithms.Reptile(), ...),
    # registered in ALGORITHMS; MetaConfig(algorithm=...) selects one
    "ALGORITHMS", "Algorithm", "make_algorithm",
    # models and losses
    "CONV_IMPLS", "POOL_IMPLS", "Conv3x3", "StepBatchNorm", "Conv4", "MLP",
    "conv3x3_patches", "max_pool_2x2", "resolve_conv_impl", "LOSSES", "accuracy",
    "prediction_loss", "check_labels", "LABEL_ERRORS", "label_errors",
    # models to loss functions (Flax linen, Flax NNX, a plain apply function), inner-loop mask
    "make_loss_fn", "ModelParts", "nnx_model", "apply_loss_fn", "inner_loop_mask",
    # tasks
    "SinusoidFamily", "sample_sinusoid_tasks", "sinusoid_eval_tasks",
    # facade
    "ModelAgnosticMetaLearning",
    # modules: scale-out (meshes, sharded steps, populations of seeds); task batching
    "algorithms", "parallel", "task_batching",
]
