"""Thin absl entry point: ``python -m aura.build <command> [--flags]`` (also the ``aura`` script).

Each command lives in ``aura/commands/<name>.py``, defines its own absl flags at import time and
exposes ``main(argv)``. Only the chosen command's module is imported, so flags of different
commands never clash and start-up stays fast. Flags are parsed here: ``--help`` lists the
command's flags and exits 0; a bad flag, a bad ``--config`` or an unexpected positional argument
is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import importlib
import re
import sys

from absl import flags
from absl import logging as absl_logging

from aura.host_alloc import keep_freed_host_memory

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("aura.commands.demo", "the main job on embedded data (what `make demo` runs)"),
    "mnist": ("aura.commands.mnist", "MNIST expert POC: LiquidMoE with growth and routing"),
    "continual": ("aura.commands.continual", "Split-MNIST in sequence: growth, freezing, gates"),
    "corpus": ("aura.commands.corpus", "build the embedded text + instruction corpus"),
    "tokenizer": ("aura.commands.tokenizer", "train a SentencePiece tokenizer on a text directory"),
    "pretrain": ("aura.commands.pretrain", "instruction pretraining of the language adapter"),
    "chat": ("aura.commands.chat", "generate with a trained adapter (recurrent, streaming)"),
    "pretrain_zones": ("aura.commands.pretrain_zones", "train or collect every brain zone"),
    "inspect": ("aura.commands.inspect", "table of the zones and experts under a checkpoint root"),
    "memory_eval": ("aura.commands.memory_eval", "long-term memory benchmark: recall per policy"),
    "cortex": ("aura.commands.cortex", "two-phase QA: Hopfield memory routing, then MoE reasoning"),
    "mixtures": ("aura.commands.mixtures", "fit a GMM / HMM / mmm on a file or the digits"),
    "cerebrum": ("aura.commands.cerebrum", "Cerebrum: experts spawned on a regime-change stream"),
    "moca": ("aura.commands.moca", "MOCA-Net: token router + slot memory + budget (copy, text)"),
    "classify": ("aura.commands.classify", "predict labels with a trained MOCA text classifier"),
}
HELP_FLAGS = ("--help", "-h", "--helpfull", "-?", "--helpshort")


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: python -m aura.build <command> [--flags]   (or: aura <command> ...)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m aura.build <command> --help` lists a command's flags."]
    return "\n".join(lines)


def command_help(name: str, module) -> str:
    """The command's docstring and every flag it defines (its own and the shared ones).

    Flags that libraries register on import (absl logging, grain, orbax, ...) are left out.
    """
    out = [(module.__doc__ or "").strip(), "", f"flags of `aura {name}`:"]
    by_module = flags.FLAGS.flags_by_module_dict()
    for mod in sorted(by_module, key=lambda m: (m != module.__name__, m)):
        if not mod.startswith("aura."):
            continue
        for flag in sorted(by_module[mod], key=lambda f: f.name):
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            out.append(f"  --{flag.name}: {flag.help}{default}")
    return "\n".join(out)


def fail(message: str) -> None:
    """One ``error:`` line on stderr, exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    sys.exit(2)


def _parse_error(err: Exception) -> str:
    """A flag error in one line; a config file that raised keeps only its exception line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1:
        raised = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line)]
        return f"{lines[0]} {raised[-1] if raised else lines[-1]}"
    return lines[0] if lines else type(err).__name__


def run(argv: list[str]) -> None:
    """Parses ``argv[2:]`` for the command ``argv[1]`` and runs its ``main``."""
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        fail(f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    rest = argv[2:]
    if any(a in HELP_FLAGS for a in rest):
        print(command_help(name, module))
        sys.exit(0)
    try:
        positional = flags.FLAGS([f"aura {name}", *rest])
    except flags.Error as err:
        fail(f"{_parse_error(err)}; see `python -m aura.build {name} --help`")
    except Exception as err:  # a --config file that does not load (missing, bad preset, ...)
        fail(f"{type(err).__name__}: {_parse_error(err)}")
    if len(positional) > 1:
        fail(f"unexpected arguments {positional[1:]}; flags take the form --name=value")
    if "config" in flags.FLAGS:  # a config file that failed to load reports only when read
        try:
            flags.FLAGS.config.keys()
        except Exception as err:
            fail(f"--config={flags.FLAGS['config'].serialize().split('=', 1)[-1]}: "
                 f"{_parse_error(err)}")  # fmt: skip
    # orbax logs every save at INFO through absl, and warns about read-only managers: keep the
    # console to AURA's own lines unless --verbosity asks for more.
    verbose = flags.FLAGS["verbosity"].present
    absl_logging.set_verbosity(flags.FLAGS.verbosity if verbose else absl_logging.ERROR)
    module.main(positional)


def main() -> None:
    """The ``aura`` console script."""
    keep_freed_host_memory()  # before any import starts numpy's or XLA's threads
    run(sys.argv[:1] + sys.argv[1:])


if __name__ == "__main__":
    main()
