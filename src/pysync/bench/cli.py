"""``pysync bench``: the command: options in, a run (or a comparison), files and a line out."""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pysync._compiled import describe
from pysync.bench.errors import BenchError
from pysync.bench.options import from_args

if TYPE_CHECKING:
    from pysync.bench.progress import Display


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # The first Ctrl-C (or SIGTERM) unwinds the run, which stops and removes what it
    # started; further ones must not cut that cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _write_knee(result: dict[str, Any], out: Path, display: Display) -> int:
    from pysync.bench import knee_plot, knee_report, report

    headline = knee_report.headline_line(result)
    report.write_json(result, out / "bench.json")
    server = result.get("target", {}).get("server") or "sync server"
    (out / "knee.svg").write_text(knee_plot.svg(result["knee"], server))
    (out / "report.md").write_text(knee_report.markdown(result, headline))
    knee_report.print_table(result, display.console)
    display.note(
        f"wrote {', '.join(str(out / n) for n in ('bench.json', 'report.md', 'knee.svg'))}"
    )
    print(headline, flush=True)
    return 0


def main(args: argparse.Namespace) -> int:
    from pysync.bench import compare, plots, report
    from pysync.bench.progress import Display
    from pysync.bench.runner import Bench, command_line, headline_line

    now = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        opts = from_args(args, now)
    except BenchError as exc:
        print(f"pysync bench: {exc}", file=sys.stderr)
        return 2
    display = Display()
    if args.compare:
        out = args.out or opts.out.with_name(f"compare-{now}")
        try:
            written = compare.compare(args.compare[0], args.compare[1], out, display.console)
        except BenchError as exc:
            print(f"pysync bench: {exc}", file=sys.stderr)
            return 2
        display.note(f"wrote {', '.join(str(out / name) for name in written)}")
        return 0
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    display.note(f"hot modules: {describe()}")
    try:
        bench = Bench(opts, display, command_line())
        result = bench.run()
    except BenchError as exc:
        print(f"pysync bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "pysync bench: interrupted; everything it started is stopped and removed",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    opts.out.mkdir(parents=True, exist_ok=True)
    if "knee" in result:
        return _write_knee(result, opts.out, display)
    headline = headline_line(result["summary"])
    report.write_json(result, opts.out / "bench.json")
    written = plots.write(result, opts.out)
    (opts.out / "report.md").write_text(report.markdown(result, written, headline))
    report.print_table(result, display.console)
    files = ["bench.json", "report.md", *written]
    if opts.profile:
        files.append("profile/ (py-spy's raw stacks)")
    display.note(f"wrote {', '.join(str(opts.out / name) for name in files)}")
    if not written:
        display.note("no plots: matplotlib is missing (pip install 'pysync[bench]')")
    print(headline, flush=True)
    return 0
