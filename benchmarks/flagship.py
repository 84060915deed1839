#!/usr/bin/env python
"""The flagship command as a new user types it: `python run.py --sweep lstm_mel`, bare, from nothing.

In a fresh cache and runs folder (so the generated stand-in is made and decoded, as on a new clone),
the command runs to its end; measured: the seconds to its printed plan, the seconds to its end, the
best trial's validation and test ROC-AUC, and the trials' states. The run's own stderr (its plan,
estimate and progress) is kept beside the results.

Run from the repository root:  python benchmarks/flagship.py [--quick]
(--quick shrinks the sweep with flags: a check that the benchmark works, not the flagship's figures.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    CpuClock,
    base_parser,
    contention_note,
    markdown_table,
    publish,
    report_header,
    start_benchmark,
)

NAME = "flagship"
QUICK_ARGS = ["--synthetic-clips", "96", "--trials", "2", "--max-epochs", "1"]


def parse_args(argv=None):
    return base_parser(__doc__).parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _, out, info, command = start_benchmark(NAME, args, argv)
    flagship = ["run.py", "--sweep", "lstm_mel", *(QUICK_ARGS if args.quick else [])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = dict(os.environ, MTAT_TAGGING_CACHE=str(work / "cache"), WANDB_MODE="disabled")
        stderr_lines, plan_seconds = [], None
        with CpuClock() as clock:
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, *flagship, "--runs-root", str(work / "runs")], cwd=REPO_ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for line in proc.stderr:
                stderr_lines.append(line)
                if plan_seconds is None and line.strip().startswith("space"):
                    plan_seconds = time.perf_counter() - started
            stdout = proc.stdout.read()
            code = proc.wait()
        if code != 0:
            raise SystemExit(f"the flagship command failed ({code}):\n{''.join(stderr_lines[-30:])}")
        (report,) = (work / "runs" / "sweeps").glob("*/best_params.json")
        summary = json.loads(report.read_text())
    best = summary["best"]
    total = clock.wall
    rows = [["seconds to the printed plan", plan_seconds], ["minutes to the end", total / 60],
            ["best trial: validation ROC-AUC", best["value"]], ["best trial: test ROC-AUC", best["test_roc_auc"]],
            ["trials", ", ".join(f"{n} {s.lower()}" for s, n in summary["counts"].items())],
            ["cores busy with other processes (mean)", clock.others_cores]]
    markdown = "\n".join([
        report_header("The flagship command, bare, from a fresh cache", info, args.quick, command),
        f"Runs `python {' '.join(flagship)}` in an empty cache and runs folder (the generated stand-in is made and "
        "decoded first, as on a new clone), to its end. Test ROC-AUC on the stand-in's test clips (the generated "
        "data; no MTAT protocol).", "", markdown_table(["measure", "value"], rows), "",
        f"Best parameters: `{json.dumps(best['params'])}`", "", contention_note(info, "the command ran once"), "",
        "The command's stderr (plan, estimate, progress):", "", "```", *[line.rstrip() for line in stderr_lines
                                                                   if line.startswith(("sweep", "  "))], "```",
        "", "Its stdout (the result):", "", "```", stdout.rstrip(), "```"])
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info, "command": command,
               "plan_seconds": plan_seconds, "total_seconds": total, "cpu_seconds": clock.cpu,
               "others_cores": clock.others_cores, "best": best, "counts": summary["counts"]}
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
