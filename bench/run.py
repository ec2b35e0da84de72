"""`make bench`: run the benchmarks, print the table and write bench/RESULTS.md.

.venv/bin/python -m bench.run                      # everything, as `make bench` does (~10 min at most)
.venv/bin/python -m bench.run --only api,history   # some of them; partial runs print, they don't write
.venv/bin/python -m bench.run --quick              # smaller counts and a 5 s idle, to try changes
"""

import argparse
import datetime
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import ROOT, Context, Figure, unavailable_reason

BENCHES = ["start_latency", "throughput", "api", "log_ingest", "idle", "history", "daemon_cpu", "web"]
HEADER = ["#", "figure (unit)", "Pieter: median / p95", "baseline: median / p95", "ratio", "target", "met"]


def machine() -> list[str]:
    def first_line(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"

    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")  # fmt: skip
    commit = first_line("git", "-C", str(ROOT), "describe", "--always", "--dirty")
    wrk = first_line("wrk", "--version").split()[1:2] or ["?"]
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit {commit}",
        f"- nproc: {os.cpu_count()} ({cpu}); RAM: {int(meminfo['MemTotal'].split()[0]) / 1024**2:.1f} GiB",
        f"- kernel: {platform.release()}; Debian {Path('/etc/debian_version').read_text().strip()}; "
        f"Python {platform.python_version()}; Redis {first_line('redis-server', '--version').split()[2][2:]}; "
        f"{first_line('/lib/systemd/systemd', '--version').split(' (')[0]}; wrk {wrk[0]}",
    ]


def table(figures: list[Figure]) -> list[str]:
    rows = [HEADER, ["---"] * len(HEADER), *(f.cells() for f in figures)]
    return ["| " + " | ".join(row) + " |" for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated: " + ",".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="smaller counts, for trying changes")
    parser.add_argument("--idle-seconds", type=float, help="idle window (default 60, --quick 5)")
    parser.add_argument("--out", type=Path, help="where to write the results (default: bench/RESULTS.md on a full run)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else BENCHES
    full = not args.only and not args.quick and args.idle_seconds is None
    out = args.out or (ROOT / "bench" / "RESULTS.md" if full else None)
    workdir = Path(tempfile.mkdtemp(prefix="pieter-bench-"))
    workdir.chmod(0o755)  # a root server runs local jobs as `nobody`: they clone the benchmark's repo from here
    ctx = Context(workdir, quick=args.quick, idle_seconds=args.idle_seconds or (5 if args.quick else 60))
    figures: list[Figure] = []
    failures: list[str] = []
    timings: list[str] = []
    began = time.monotonic()
    try:
        for name in names:
            started = time.monotonic()
            print(f"== {name}", file=sys.stderr, flush=True)
            try:
                found = importlib.import_module(f"bench.{name}").run(ctx)
            except Exception:
                traceback.print_exc()
                failures.append(f"- {name}: `{traceback.format_exc().strip().splitlines()[-1]}`")
                found = []
            figures += found
            timings.append(f"{name} {time.monotonic() - started:.0f} s")
            print("\n".join(table(found)[2:]), file=sys.stderr, flush=True)
    finally:
        ctx.close()
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began
    lines = [
        "# Benchmark results",
        "",
        f"`make bench` (`bench/run.py`{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}), "
        f"{total / 60:.1f} min ({', '.join(timings)}), on:",
        "",
        *machine(),
        "",
        "Ratio = Pieter's median ÷ the baseline's median, both measured in this run (times: lower is better; "
        "rates: higher is better). How each figure is taken: the docstring of its module in `bench/`.",
        "",
        *table(figures),
        "",
        *(["## Notes", "", *(f"- {f.bench}, {f.name}: {f.note}" for f in figures if f.note), ""]
          if any(f.note for f in figures) else []),
        *(["## Failed", "", *failures, ""] if failures else []),
        *([f"The systemd figures were skipped: {unavailable_reason()}", ""] if unavailable_reason() else []),
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
