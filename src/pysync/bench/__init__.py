"""``pysync bench``: how a sync server keeps up with a pgbench workload.

``add_arguments`` fills the ``bench`` subcommand's parser and ``run`` runs it; both
import only what they need, so ``pysync serve`` does not load the bench's extras.
"""

from __future__ import annotations

import argparse
import sys

from pysync.bench.options import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """Run ``pysync bench`` with parsed arguments; the exit status."""
    try:
        import psutil  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        print(f"pysync bench: {exc.name} is missing: pip install 'pysync[bench]'", file=sys.stderr)
        return 2
    from pysync.bench.cli import main

    return main(args)
