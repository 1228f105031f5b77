"""Thin absl entry point: ``python -m aura.build <command> [--flags]``.

Each command lives in ``aura/commands/<name>.py``, defines its own absl flags at import time and
exposes ``main(argv)``. Only the chosen command's module is imported, so flags of different
commands never clash and start-up stays fast.
"""

from __future__ import annotations

import importlib
import sys

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
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: python -m aura.build <command> [--flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`python -m aura.build <command> --help` lists a command's flags."]
    return "\n".join(lines)


def run(argv: list[str]) -> None:
    """Dispatches ``argv[1]`` to its command module under ``absl.app.run``."""
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    from absl import app, logging

    module = importlib.import_module(COMMANDS[name][0])
    rest = argv[2:]
    if not any(a.startswith(("--verbosity", "-v")) for a in rest):
        # orbax logs every save at INFO through absl; keep the console to AURA's own lines.
        rest = ["--verbosity=-1", *rest]
    logging.set_verbosity(logging.WARNING)
    app.run(module.main, argv=[f"aura.build {name}", *rest])


if __name__ == "__main__":
    run(sys.argv)
