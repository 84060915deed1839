#!/usr/bin/env python
"""Start-up benchmark: how soon `run.py` answers when nothing needs training.

Each command is a fresh interpreter, as a user types it, timed from its start to its exit (median of
the repeats, interleaved); the bare flagship sweep is timed to the end of its printed plan (the line
naming its search space), then stopped. The reference is `import lightning.pytorch` alone: what
every command paid before the command line was made torch-free, measured in the same run, so the
ratios hold on any machine.

Run from the repository root:  python benchmarks/startup.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    base_parser,
    contention_note,
    markdown_table,
    publish,
    report_header,
    start_benchmark,
    stats,
)

NAME = "startup"
COMMANDS = {
    "--help": ["run.py", "--help"],
    "--print-config (mel_cnn)": ["run.py", "--model", "mel_cnn", "--print-config"],
    "--print-config (modern recipe)": ["run.py", "--model", "short_chunk_resnet", "--recipe", "modern",
                                       "--print-config"],
    "--print-config (sweep)": ["run.py", "--sweep", "lstm_mel", "--print-config"],
    "bad value (--lr -0.01)": ["run.py", "--model", "mel_cnn", "--lr", "-0.01"],
    "unknown option (--learning-rate)": ["run.py", "--model", "mel_cnn", "--learning-rate", "0.1"],
    "bad experiment file": ["run.py", "--config", "{bad_yaml}"],
}
REFERENCE = ["-c", "import lightning.pytorch"]
PLAN_END = "space"


def parse_args(argv=None):
    parser = base_parser(__doc__)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    return args


def _timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, timeout=300)
    return time.perf_counter() - started


def _time_to_plan(env: dict, work: Path) -> float:
    """Seconds from starting the bare flagship sweep to the end of its plan (then it is stopped)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "run.py", "--sweep", "lstm_mel", "--runs-root", str(work / "runs"),
                             "--cache-dir", str(work / "cache"), "--logger", "none"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:
            if line.strip().startswith(PLAN_END):
                return time.perf_counter() - started
        raise RuntimeError("the sweep ended before printing its plan")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv=None) -> int:
    args = parse_args(argv)
    _, out, info, command = start_benchmark(NAME, args, argv)
    env = dict(os.environ, WANDB_MODE="disabled")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bad = work / "bad.yaml"
        bad.write_text("model: mel_cnn\nlr: [1,\n")
        commands = {name: [a.format(bad_yaml=bad) for a in argv_] for name, argv_ in COMMANDS.items()}
        times: dict[str, list[float]] = {name: [] for name in [*commands, "reference", "plan"]}
        for _ in range(args.repeats):  # interleaved: every command sees the same machine
            times["reference"].append(_timed(REFERENCE, env))
            for name, argv_ in commands.items():
                times[name].append(_timed(argv_, env))
            times["plan"].append(_time_to_plan(env, work))
    reference = stats(times["reference"])["median"]
    rows, results = [], {}
    for name in [*commands, "plan"]:
        median = stats(times[name])["median"]
        label = "bare `--sweep lstm_mel`: its plan printed" if name == "plan" else f"`{name}`"
        rows.append([label, median, median / reference])
        results[name] = {"seconds": stats(times[name]), "ratio_to_lightning_import": median / reference}
    markdown = "\n".join([
        report_header("Start-up of run.py", info, args.quick, command),
        f"Median of {args.repeats} interleaved repeats, each a fresh interpreter timed to its exit (the sweep: to "
        "the end of its plan). Reference: `python -c 'import lightning.pytorch'` alone, "
        f"{reference:.2f} s here: what every command paid when the command line imported Lightning.",
        "", markdown_table(["command", "seconds", "ratio to the Lightning import"], rows), "",
        contention_note(info, f"each figure is the median of {args.repeats} repeats")])
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info, "command": command, "repeats": args.repeats,
               "reference_seconds": stats(times["reference"]), "results": results}
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
