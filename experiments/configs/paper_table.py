"""The MAML++ paper's table (Antoniou et al., 2019, Table 1): 12 runs, 3 seeds each.

The order is the priority: a GPU session with minutes to spare finishes the first runs
first (MAML++ on the Omniglot 1-shot cells, then MAML on them, then the 5-shot cells, then
mini-ImageNet, whose data this project does not ship). benchmarks/GPU_QUEUE.md says what
the next GPU session runs; what has been run: docs/results.md, "The paper's table".

Run (resumable; finished runs are skipped; ``--max-minutes`` is the call's budget):
    python -m experiments.reproduce --data-dir ../shared/data --max-minutes 9
    python -m experiments.reproduce --cells omniglot_5w1s --methods mamlpp --seeds 3 \\
        --data-dir ../shared/data
CPU smoke (``--smoke``: each config's ``:smoke`` variant; the whole path, far from converged):
    python -m experiments.reproduce --smoke --cells omniglot_5w1s --seeds 2 \\
        --data-dir ../shared/data --root runs/paper_table_smoke
Expected runtime (estimate): the 12 cells x 3 seeds take tens of GPU-hours (Omniglot
cells under an hour to two hours each, mini-ImageNet cells several hours; see each config);
``--max-minutes`` budgets a call and the next call resumes. The smoke run: minutes on a CPU.
Paper (test accuracy %, MAML / MAML++, MAML as the MAML++ paper quotes it; intervals in each
cell's config): Omniglot 5w1s 98.7 / 99.47, 5w5s 99.9 / 99.93, 20w1s 95.8 / 97.65,
20w5s 98.9 / 99.33; mini-ImageNet 5w1s 48.70 / 52.15, 5w5s 63.11 / 68.32.
"""

from experiments.reproduce import PaperTable


def get_config(arg=None):
    """The table's run order; ``arg`` is not used (``--smoke`` selects the variants)."""
    del arg
    return PaperTable(
        order=("omniglot_5w1s_mamlpp", "omniglot_20w1s_mamlpp",
               "omniglot_5w1s_maml", "omniglot_20w1s_maml",
               "omniglot_5w5s_mamlpp", "omniglot_20w5s_mamlpp",
               "omniglot_5w5s_maml", "omniglot_20w5s_maml",
               "miniimagenet_5w1s_mamlpp", "miniimagenet_5w5s_mamlpp",
               "miniimagenet_5w1s_maml", "miniimagenet_5w5s_maml"),
        seeds=3,
        smoke={})
