"""Planning a GPU call of the paper table from measured step rates: what finishes in it.

A GPU window is minutes long, so a call should end with finished work: a whole seed of a
run where one fits, otherwise the longest chunk that can be resumed (to the last epoch
end that fits), and the evaluation's time kept back. The rates come from
``RATES_FILE``: per GPU model (``jax.devices()[0].device_kind``), table cell, seeds per
program (1, or a population of 3 in one program) and convolution, the seed-steps per
second and compile seconds measured on that GPU, each with the result file it came from;
and per GPU model the training loop's cost over the bare step (validation, checkpoints),
its start-up and the evaluation's seconds per seed.

* ``choose_seeds_per_program``: a population of the table's seeds in one program where its
  measured seed-steps/s beat one seed's, else seed after seed (``"per_seed"``).
* ``plan_call``: walks the pending work in the table's order and says, for the seconds a
  call has, what each piece gets: ``finishes`` or a chunk of ``steps``.

Where a GPU model, cell or convolution has no record the plan says so and the call runs
on its wall-clock budget alone (``experiments.reproduce --max-minutes``).

Usage (on the CPU, before a GPU session: which ``TABLE_MIN`` finishes what)::

    python -m experiments.table_plan --device "NVIDIA H200" --minutes 8 \\
        --state-dir experiments/results/paper_table/state
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys

__all__ = ["RATES_FILE", "START_UP", "Rates", "Pending", "PlanStep", "load_rates",
           "choose_seeds_per_program", "plan_call", "format_plan", "program_phases",
           "existing_layout", "main"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATES_FILE = ROOT / "experiments" / "results" / "paper_table" / "step_rates.json"
START_UP = "call start-up (process, data)"


@dataclasses.dataclass(frozen=True)
class Rates:
    """The measured rates (``RATES_FILE``): ``records`` and ``training_loop`` entries."""

    records: tuple[dict, ...]
    training_loop: dict[str, dict]

    def step(self, device: str, cell: str, seeds: int, conv_impl: str) -> dict | None:
        """The record of one program, or None where it was not measured."""
        for r in self.records:
            if (r["device"], r["cell"], r["seeds"], r["conv_impl"]) == (device, cell, seeds,
                                                                          conv_impl):
                return r
        return None


def load_rates(path: str | pathlib.Path = RATES_FILE) -> Rates:
    """The rates recorded in ``path`` (none where it does not exist).

    Example:
        >>> rates = load_rates()
        >>> rates.step("NVIDIA H200", "omniglot_5w1s", 1, "patches")["seed_steps_per_s"]
        116.294
    """
    path = pathlib.Path(path)
    if not path.is_file():   # an installed wheel ships no results: nothing is measured
        return Rates((), {})
    d = json.loads(path.read_text())
    return Rates(tuple(d["records"]), dict(d.get("training_loop", {})))


def choose_seeds_per_program(rates: Rates, device: str, cell: str, seeds: int,
                             conv_impl: str) -> tuple[str, str]:
    """``("population" | "per_seed", why)`` for a new run of ``seeds`` seeds.

    Example:
        >>> choose_seeds_per_program(load_rates(), "NVIDIA H200", "omniglot_5w1s", 3,
        ...                          "patches")[0]
        'per_seed'
    """
    one = rates.step(device, cell, 1, conv_impl)
    many = rates.step(device, cell, seeds, conv_impl) if seeds > 1 else None
    if seeds == 1:
        return "population", "one seed"
    if one is None and many is None:
        return "population", f"no measured rate for {cell} ({conv_impl}) on {device}"
    if many is None:
        return "per_seed", (f"only one seed per program measured: "
                            f"{one['seed_steps_per_s']:.0f} steps/s")
    if one is None or many["seed_steps_per_s"] > one["seed_steps_per_s"]:
        return "population", (f"{seeds} seeds per program: {many['seed_steps_per_s']:.0f} "
                              "seed-steps/s" + ("" if one is None else
                                                f" > {one['seed_steps_per_s']:.0f}"))
    return "per_seed", (f"one seed per program: {one['seed_steps_per_s']:.0f} steps/s >= "
                        f"{many['seed_steps_per_s']:.0f} seed-steps/s for {seeds}")


@dataclasses.dataclass(frozen=True)
class Pending:
    """Work left on one program: a population run, or one seed of a run trained seed by
    seed."""

    name: str              # the run, or "<run>/seed<k>"
    cell: str
    seeds: int             # seeds in this program
    conv_impl: str         # as the device resolves it ("patches", "xla")
    steps_done: int
    total_steps: int
    iterations_per_epoch: int
    phases: int = 1        # programs compiled over the schedule (MSL on, off; DA)


@dataclasses.dataclass(frozen=True)
class PlanStep:
    """What one piece of work gets in a call."""

    name: str
    steps: int             # outer steps planned in this call
    seconds: float         # expected, start-up and evaluation included
    finishes: bool
    note: str = ""


def _program_seconds(rate: dict, loop: dict, p: Pending, steps: int) -> float:
    steps_per_s = rate["seed_steps_per_s"] / p.seeds * loop["rate_factor"]
    return (loop["startup_s"] + (p.phases - 1) * rate["compile_s"] + steps / steps_per_s
            + loop["eval_s_per_seed"] * p.seeds)


def plan_call(rates: Rates, device: str, pending: list[Pending], seconds: float
              ) -> list[PlanStep]:
    """The plan of a call of ``seconds`` on ``device`` over ``pending`` (in table order).

    Each piece is planned whole if it fits in what is left; the first that does not gets
    the steps that fit, rounded down to an epoch end (what ``experiments.train`` stops at),
    and the call ends there. A piece without a measured rate ends the plan too (the call
    then runs on its budget alone).

    Example:
        >>> work = [Pending("omniglot_5w1s_mamlpp/seed0", "omniglot_5w1s", 1, "patches",
        ...                 0, 50_000, 500, phases=2)]
        >>> start_up, step = plan_call(load_rates(), "NVIDIA H200", work, 600)
        >>> start_up.name, step.finishes, round(step.seconds)
        ('call start-up (process, data)', True, 491)
        >>> plan_call(load_rates(), "NVIDIA H200", work, 300)[1].steps
        27000
    """
    loop = rates.training_loop.get(device)
    left, plan = seconds, []
    if loop is not None:   # the call's process start and data loading come first, once
        plan.append(PlanStep(START_UP, 0, loop["call_startup_s"], True))
        left -= loop["call_startup_s"]
    for p in pending:
        remaining = p.total_steps - p.steps_done
        if remaining <= 0:
            continue
        rate = rates.step(device, p.cell, p.seeds, p.conv_impl)
        if rate is None or loop is None:
            plan.append(PlanStep(p.name, 0, math.nan, False,
                                 f"no measured rate for {p.cell}, {p.seeds} seed(s) per "
                                 f"program, {p.conv_impl}, on {device}"))
            break
        need = _program_seconds(rate, loop, p, remaining)
        if need <= left:
            plan.append(PlanStep(p.name, remaining, need, True))
            left -= need
            continue
        fixed = _program_seconds(rate, loop, p, 0)
        steps_per_s = rate["seed_steps_per_s"] / p.seeds * loop["rate_factor"]
        fit = int(max(left - fixed, 0) * steps_per_s)
        ipe = p.iterations_per_epoch
        end = (p.steps_done + fit) // ipe * ipe   # the last epoch end reached
        steps = max(end - p.steps_done, 0)
        plan.append(PlanStep(p.name, steps, fixed + steps / steps_per_s if steps else 0.0,
                             False, "resumable chunk" if steps else "does not fit"))
        break
    return plan


def format_plan(plan: list[PlanStep], seconds: float) -> str:
    """The plan as text lines.

    Example:
        >>> print(format_plan([PlanStep("a/seed0", 500, 30.0, True)], 60))
        plan for 60 s: a/seed0: 500 steps, finishes (~30 s); ~30 s unplanned
    """
    parts = []
    for s in plan:
        what = "finishes" if s.finishes else (s.note or "chunk")
        eta = "" if math.isnan(s.seconds) else f" (~{s.seconds:.0f} s)"
        parts.append(f"{s.name}: {s.steps} steps, {what}{eta}")
    used = sum(s.seconds for s in plan if not math.isnan(s.seconds))
    return f"plan for {seconds:.0f} s: " + "; ".join(parts) + f"; ~{seconds - used:.0f} s unplanned"


def _pending_from_state(state_dir: pathlib.Path | None, names: list[str], seeds: int,
                        rates: Rates, device: str) -> list[Pending]:
    """The table's pending work as a saved state (``experiments.table_state``) says."""
    from experiments import reproduce  # it imports this module
    out = []
    for name in names:
        cell, _ = reproduce._split(name)
        cfg = reproduce.run_config(name, seeds=seeds, smoke=False, smoke_updates={},
                                   overrides=[])
        # What "auto" resolves to on a GPU (maml_jax.resolve_conv_impl), this being run on
        # the CPU to plan a GPU call.
        conv = "patches" if cfg["conv_impl"] == "auto" else cfg["conv_impl"]
        layout = existing_layout(state_dir / name) if state_dir is not None else None
        if layout is None:
            layout, _ = choose_seeds_per_program(rates, device, cell, seeds, conv)
        # The programs, named and placed as reproduce trains them (under the saved state).
        root = state_dir if state_dir is not None else pathlib.Path("no/saved/state")
        for program, program_cfg, saved in reproduce.run_programs(name, cfg, layout, root):
            out.append(Pending(program, cell, program_cfg["num_seeds"], conv,
                               _saved_step(saved),
                               cfg["num_epochs"] * cfg["iterations_per_epoch"],
                               cfg["iterations_per_epoch"], program_phases(cfg)))
    return out


def program_phases(cfg: dict) -> int:
    """How many training programs a run compiles over its schedule: one per phase
    (``maml_jax.phase``: MSL on, then off after ``msl_epochs``; first order for
    ``first_order_epochs``).

    Example:
        >>> program_phases({"msl": True, "msl_epochs": 10, "num_epochs": 100,
        ...                 "first_order_epochs": 0})
        2
    """
    return (1 + int(bool(cfg["msl"]) and cfg["msl_epochs"] < cfg["num_epochs"])
            + int(cfg["first_order_epochs"] > 0))


def existing_layout(run_dir: pathlib.Path) -> str | None:
    """How a run directory holds its seeds: ``"population"`` (one ``config.json``),
    ``"per_seed"`` (``seed<k>/`` folders) or None (nothing there yet).

    Example:
        >>> existing_layout(pathlib.Path("no/such/run")) is None
        True
    """
    if (run_dir / "config.json").is_file():
        return "population"
    if any(run_dir.glob("seed*/config.json")):
        return "per_seed"
    return None


def _saved_step(saved: pathlib.Path) -> int:
    summary = saved / "train_summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        return json.loads(summary.read_text())["step"]
    info = saved / "checkpoint.json"
    return json.loads(info.read_text())["step"] if info.is_file() else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.table_plan --device D --minutes M [--state-dir S]``."""
    from experiments import reproduce
    from experiments.configs import paper_table
    p = argparse.ArgumentParser(prog="python -m experiments.table_plan",
                                description=__doc__.split("\n")[0])
    p.add_argument("--device", required=True, help="jax device_kind, e.g. 'NVIDIA H200'")
    p.add_argument("--minutes", type=float, required=True, help="the call's table minutes")
    p.add_argument("--state-dir", default=None, help="the saved table state (progress)")
    p.add_argument("--cells", default="", help="comma-separated cells (default all)")
    p.add_argument("--methods", default="", help="comma-separated methods (default all)")
    args = p.parse_args(argv)
    table = paper_table.get_config()
    names = reproduce.runs(table, [c for c in args.cells.split(",") if c] or None,
                           [m for m in args.methods.split(",") if m] or None)
    rates = load_rates()
    state_dir = pathlib.Path(args.state_dir) if args.state_dir else None
    pending = _pending_from_state(state_dir, names, table.seeds, rates, args.device)
    print(format_plan(plan_call(rates, args.device, pending, 60 * args.minutes),
                      60 * args.minutes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
