"""The MAML++ paper's table (Antoniou et al., 2019, Table 1): 12 runs, 3 seeds each.

The order is the priority: a GPU session with minutes to spare finishes the first runs
first. MAML++ on the Omniglot 1-shot cells first (the paper's headline numbers; 5w1s is
the one cell measured so far, on 20 of its 100 epochs), then the MAML rows of the same
cells, then the 5-shot cells, then mini-ImageNet (which needs data this project does not
ship). benchmarks/GPU_QUEUE.md says what the next GPU session runs.

Run (each run resumes where the last call stopped; finished runs are skipped):
    python -m experiments.reproduce --data-dir ../shared/data --max-minutes 9
    (on a GPU add ``--set conv_impl=patches`` once GPU_QUEUE item 1 has checked its
    gradient there; it is 1.3-2.6x faster)
    python -m experiments.reproduce --cells omniglot_5w1s --methods mamlpp --seeds 3 \\
        --data-dir ../shared/data

CPU smoke variant (``--smoke``: each config's ``:smoke`` variant, 16 filters, 3 epochs
of 100 iterations; the whole path, far from converged):
    python -m experiments.reproduce --smoke --cells omniglot_5w1s --seeds 2 \\
        --data-dir ../shared/data --root runs/paper_table_smoke

Expected runtime (not measured for populations yet): the 20-epoch single-seed run of
Omniglot 5w1s MAML++ took 3.6 s per epoch on an H200 with ``conv_impl=patches``
(2026-11-26), so its 100 epochs take about 7 min for one seed and at most 3x that for
the population of 3 (GPU_QUEUE item 2 measures the factor); the 20-way and 5-shot cells
cost several times more per step. On a 2-core CPU: days per run at paper scale; the
smoke run of one cell with 2 seeds takes minutes.
Paper (test accuracy, %; MAML as the MAML++ paper quotes it):
    Omniglot 5w1s  MAML 98.7 +- 0.4,  MAML++ 99.47 +- 0.05
    Omniglot 5w5s  MAML 99.9 +- 0.1,  MAML++ 99.93 +- 0.09
    Omniglot 20w1s MAML 95.8 +- 0.3,  MAML++ 97.65 +- 0.05
    Omniglot 20w5s MAML 98.9 +- 0.2,  MAML++ 99.33 +- 0.03
    mini-ImageNet 5w1s MAML 48.70 +- 1.84, MAML++ 52.15 +- 0.26
    mini-ImageNet 5w5s MAML 63.11 +- 0.92, MAML++ 68.32 +- 0.44
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
