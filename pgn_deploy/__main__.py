"""``python -m pgn_deploy COMMAND ...``: every ``pgn-COMMAND`` script, without the scripts on PATH."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from pgn_deploy._version import __version__
from pgn_deploy.cli.common import COMMANDS, EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to ``pgn_deploy.cli.<command>.main(argv[1:])``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: python -m pgn_deploy COMMAND [ARGS...]   (COMMAND --help for its flags)\n\ncommands:")
        for name, summary in COMMANDS.items():
            print(f"  {name:<{width}}  {summary}")
        return 0 if argv else EXIT_ERROR
    if argv[0] == "--version":
        print(f"pgn-deploy {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"pgn_deploy: error: unknown command {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_ERROR
    module = importlib.import_module(f"pgn_deploy.cli.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
