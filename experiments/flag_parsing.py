"""Command-line parsing of the experiment scripts: absl flags and ``--config`` files.

Every script builds a fresh ``absl.flags.FlagValues`` per call of its ``main(argv)``
(absl's global ``FLAGS`` would keep values between calls, e.g. between tests in one
process) and parses it with :func:`parse`, which turns every flag or config problem into a
``ConfigError`` with a one-line message; :func:`run_main` runs the script's body and turns
the errors into exit statuses (2: flags, config or data; 3: a non-finite loss).

Example:
    >>> from absl import flags
    >>> fv = flags.FlagValues()
    >>> _ = flags.DEFINE_string("workdir", None, "run directory", flag_values=fv)
    >>> parse(fv, program_argv("prog", ["--workdir", "runs/x", "extra"]))
    ['prog', 'extra']
    >>> fv["workdir"].value
    'runs/x'
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags
from ml_collections import config_dict, config_flags

from experiments.config_lib import ConfigError
from experiments.datasets import DataError
from maml_jax.meta import NonFiniteLossError

__all__ = ["program_argv", "define_config_flag", "parse", "parse_or_help",
           "check_no_arguments", "run_dirs", "config_from_flags", "wants_help", "help_text",
           "EXIT_STATUS", "run_main"]


def program_argv(prog: str, argv: Sequence[str] | None) -> list[str]:
    """absl's argv (program name first): ``sys.argv`` for None, else ``[prog, *argv]``.

    ``main(argv)`` receives the arguments without the program name (as ``argparse`` did),
    so that tests call ``train.main(["--config", ...])``; a console entry point calls
    ``main()``.
    """
    return list(sys.argv) if argv is None else [prog, *argv]


def define_config_flag(flag_values: flags.FlagValues, argv: Sequence[str], *,
                       name: str = "config", required: bool = True,
                       default: str | None = None, help_string: str | None = None):
    """Defines ``--config=FILE.py[:variant]`` and its ``--config.KEY=VALUE`` overrides.

    ``argv`` is the full argument list that will be parsed: config_flags finds the
    overrides in it (by default it would read ``sys.argv``, wrong for in-process calls).
    The loaded ConfigDict is locked, so an override of an unknown key is an error.
    """
    with _config_files_load_quietly():   # a default config file is loaded right here
        holder = config_flags.DEFINE_config_file(
            name, default, help_string or (
                "config file, experiments/configs/<name>.py, optionally :variant (e.g. :smoke); "
                f"override keys with --{name}.KEY=VALUE"),
            flag_values=flag_values, lock_config=True, sys_argv=list(argv))
    if required:
        flags.mark_flag_as_required(name, flag_values=flag_values)
    return holder


@contextlib.contextmanager
def _config_files_load_quietly():
    """ml_collections 1.1.0 imports config files with the deprecated ``load_module()``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the load_module", category=DeprecationWarning)
        yield


def _override_key(argv: Sequence[str], key: str, name: str) -> str:
    """The command-line argument that overrides ``key``, at any depth (for error messages:
    ``--config.methods.MAML.inner_lr`` when ``inner_lr`` is the unknown key)."""
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag.startswith((f"--{name}.", f"-{name}.")) and flag.endswith(f".{key}"):
            return flag
    return f"--{name}.{key}"


def parse(flag_values: flags.FlagValues, argv: Sequence[str], *,
          config_flag: str | None = None,
          config_types: tuple[type, ...] = (config_dict.ConfigDict,)) -> list[str]:
    """Parses ``argv`` (program name first); returns the positional arguments left.

    ``config_flag``: the name of a flag from ``define_config_flag``, whose loaded value
    must be one of ``config_types`` (study grids and sinusoid configs are dataclasses).

    Raises:
        ConfigError: an unknown flag or config key, a value of the wrong type, a config
            file that is missing or does not import, a missing required flag.
    """
    try:
        with _config_files_load_quietly():
            rest = flag_values(list(argv))
    except flags.IllegalFlagValueError as err:
        text = str(err)
        if "Error whilst parsing config file" in text:
            # config_flags wraps errors of get_config() in a traceback: keep its last line.
            last = [line for line in text.strip().splitlines() if line.strip()][-1]
            last = last.removeprefix(f"{ConfigError.__module__}.{ConfigError.__name__}: ")
            raise ConfigError(f"could not load the config: {last}") from None
        raise ConfigError(text) from None
    except flags.Error as err:
        raise ConfigError(str(err)) from None
    except (KeyError, AttributeError) as err:
        # config_flags: an override of a key the (locked) config does not have.
        while err.args and isinstance(err.args[0], (KeyError, AttributeError)):
            err = err.args[0]   # ConfigDict wraps the KeyError in an AttributeError
        lines = str(err.args[0] if err.args else err).splitlines() or [""]
        key, hint = lines[0].strip("'\""), " ".join(lines[1:])
        name = config_flag or "config"
        raise ConfigError(f"{_override_key(argv, key, name)}: unknown config key {key!r}"
                          + (f" ({hint})" if hint else "")) from None
    except ValueError as err:
        # config_flags: an override whose key path is not Python (``--config.num-ways=3``;
        # a key that is not an identifier is written ``--config.methods['MAML++'].msl=...``).
        raise ConfigError(f"cannot read a --{config_flag or 'config'} override ({err}); keys "
                          "are Python names, others are indexed: --config.methods['MAML++']"
                          ".msl=False") from None
    if config_flag is not None:
        _check_config_loaded(flag_values, config_flag, config_types)
    return rest


def _check_config_loaded(flag_values: flags.FlagValues, name: str,
                         types: tuple[type, ...]) -> None:
    """A config file that could not be read surfaces here (config_flags defers it)."""
    value = flag_values[name].value
    if value is None or isinstance(value, types):
        return
    spec = str(flag_values[name].config_filename)
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        value.keys()
    except OSError as err:
        raise ConfigError(f"could not import config {path}: {err}") from None
    raise ConfigError(f"get_config() of {path} must return "
                      f"{' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")


def config_from_flags(argv: Sequence[str],
                      config_types: tuple[type, ...] = (config_dict.ConfigDict,)) -> Any:
    """The config that ``--config=...`` plus ``--config.KEY=VALUE`` arguments give.

    What the scripts do with their ``--config`` flag, for tests, notebooks and the
    scripts whose configs are dataclasses (``config_types``; those take no overrides).

    Example:
        >>> cfg = config_from_flags(["--config=experiments/configs/omniglot_5w1s_mamlpp.py:smoke",
        ...                          "--config.num_ways=20"])
        >>> cfg.name, cfg.num_ways
        ('omniglot_5w1s_mamlpp_smoke', 20)
    """
    full = program_argv("config", argv)
    fv = flags.FlagValues()
    define_config_flag(fv, full)
    check_no_arguments(parse(fv, full, config_flag="config", config_types=config_types))
    return fv["config"].value


def parse_or_help(flag_values: flags.FlagValues, argv: Sequence[str], doc: str,
                  **parse_kwargs: Any) -> list[str] | None:
    """What every script's ``main`` does first: :func:`parse`, or, when the command line
    asks for help, print the script's docstring and flags and return None (the script
    then exits with status 0).

    Example:
        >>> fv = flags.FlagValues()
        >>> parse_or_help(fv, ["prog", "--help"], "A script.")  # doctest: +ELLIPSIS
        A script.
        ...
    """
    if wants_help(argv):
        print(help_text(doc, flag_values))
        return None
    return parse(flag_values, argv, **parse_kwargs)


def check_no_arguments(rest: Sequence[str], hint: str = "") -> None:
    """Raises ``ConfigError`` if :func:`parse` left positional arguments besides the
    program name (``hint`` is appended to the message)."""
    if len(rest) > 1:
        raise ConfigError(f"unexpected arguments {list(rest[1:])}{hint}")


def run_dirs(rest: Sequence[str]) -> list[str]:
    """The run directories named as positional arguments (at least one, else
    ``ConfigError``)."""
    if len(rest) < 2:
        raise ConfigError("name at least one run directory")
    return list(rest[1:])


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for help (absl's FlagValues does not handle it)."""
    return any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull") for a in argv[1:])


def help_text(doc: str, flag_values: flags.FlagValues) -> str:
    """The script's docstring followed by its flags."""
    return f"{doc.strip()}\n\nflags:\n{flag_values.get_help()}"


#: The exit status of a script that an error of this type ended: 2 for the user's input
#: (flags, config, data), 3 for meta-training that diverged (a non-finite loss).
EXIT_STATUS = {ConfigError: 2, DataError: 2, NonFiniteLossError: 3}


def run_main(body: Callable[[], int | None], *,
             usage_errors: tuple[type[Exception], ...] = ()) -> int:
    """Runs a script's main body and returns the script's exit status.

    The body returns the status (None: 0). An error of a type in ``EXIT_STATUS`` ends it
    with that status, as do ``usage_errors`` (further types that mean bad input to this
    script) with 2; its message goes to stderr as one line, ``error: <message>``, without
    a traceback. Any other error propagates (a bug, with its traceback).

    Example:
        >>> def body():
        ...     raise ConfigError("num_ways must be an integer >= 1, got 0")
        >>> run_main(body), run_main(lambda: None), run_main(lambda: 1)
        (2, 0, 1)
    """
    handled = (*EXIT_STATUS, *usage_errors)
    try:
        status = body()
    except handled as err:
        print(f"error: {err}", file=sys.stderr)
        return next((code for kind, code in EXIT_STATUS.items() if isinstance(err, kind)), 2)
    return 0 if status is None else int(status)
