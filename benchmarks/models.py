#!/usr/bin/env python
"""Model and recipe benchmark: every model and recipe against `mel_cnn` with the paper's recipe.

Issue 13 §3. Each run is a real `run.py` run (the suite's `run_experiment`: the data module,
frontend, callbacks, validation, best checkpoint and test) on the suite's generated MTAT-layout
data (`--data synthetic`, full 29.1 s clips by default), every run with the same number of epochs
and the same seed, each in a fresh subprocess so that its peak memory is its own. Measured per
run: test ROC-AUC and PR-AUC (the suite's metrics on the generated test clips), the training
phase of each epoch (first batch to last optimizer step; `training.train_phase_timer`), the
whole run's wall time, the network's parameter count and the subprocess's peak resident memory.
Ratios: each run's test ROC-AUC minus the baseline's, and its epoch time over the baseline's,
measured in the same benchmark run.

The generated tags are easier than MTAT's, and a few epochs are far from the publications'
training lengths (Won et al. train 200): the ranking under one short budget is the point, not
the absolute numbers.

Equal epochs are equal data: a model that trains on random crops draws one per clip per epoch (Won et al.'s
loader, and won2020's default), so no model sees more audio per epoch than another.

Run from the repository root:  python benchmarks/models.py [--quick] [--runs mel_cnn:paper,fcn:won2020]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from benchmarks import training  # noqa: E402
from benchmarks.common import (  # noqa: E402
    QUICK_CLIP_SAMPLES,
    base_parser,
    markdown_table,
    peak_rss_mib,
    publish,
    report_header,
    start_benchmark,
    write_outputs,
)
from lightning_modules.registry import MODELS as REGISTERED  # noqa: E402

NAME = "models"
BASELINE = "mel_cnn:paper"
# Every registered model not trained by the paper's recipe, cheapest first as measured (2 CPU cores, one crop per clip;
# a model registered later comes last), so that a benchmark stopped early still holds the baseline's neighbours.
# Architectures compare under `modern`, which can train in a few epochs; won2020 (Adam 1e-4 for 80 of its 200 epochs) is
# measured on mel_cnn and on the short-chunk CNN it was published with.
MEASURED_COST_ORDER = ("sample_cnn_se", "short_chunk_resnet", "short_chunk_cnn", "fcn", "harmonic_cnn", "crnn",
                       "musicnn", "tagging_transformer")
LITERATURE = tuple(sorted((name for name, spec in REGISTERED.items() if spec.recipe != "paper"),
                          key=lambda name: (MEASURED_COST_ORDER + (name,)).index(name)))
DEFAULT_RUNS = (BASELINE, "mel_cnn:won2020", "mel_cnn:modern", "short_chunk_cnn:won2020",
                *(f"{m}:modern" for m in LITERATURE))
QUICK_RUNS = (BASELINE, "short_chunk_cnn:won2020")
# --quick: tiny networks and inputs, so the script's whole path runs in seconds (figures meaningless)
QUICK_ARGS = {"mel_cnn": ["--n-mels", "64", "--hop-length", "1024"],
              "short_chunk_cnn": ["--width", "8"]}
RESULT_MARK = "BENCHMARK-RESULT "


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--runs", default=None,
                        help="MODEL:RECIPE pairs, comma-separated; the first is the baseline "
                             f"(default: {BASELINE}, mel_cnn with won2020 and modern, short_chunk_cnn with won2020, "
                             "every literature model with modern)")
    parser.add_argument("--clips", type=int, default=None, help="generated clips (default 240; quick 48)")
    parser.add_argument("--clip-samples", type=int, default=None, help="clip length (default MTAT's 465,984)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default 3; quick 1)")
    parser.add_argument("--extra", default="", help="run.py options added to every run, e.g. '--num-workers 1'")
    parser.add_argument("--worker", default=None, help=training.argparse_suppress())
    args = parser.parse_args(argv)
    q = args.quick
    args.runs = args.runs.split(",") if args.runs else list(QUICK_RUNS if q else DEFAULT_RUNS)
    args.clips = args.clips or (48 if q else 240)
    if args.clip_samples is None:
        from infrastructure.audio import MTAT_CLIP_SAMPLES

        args.clip_samples = QUICK_CLIP_SAMPLES if q else MTAT_CLIP_SAMPLES
    args.epochs = args.epochs or (1 if q else 3)
    for pair in args.runs:
        model, _, recipe = pair.partition(":")
        if not recipe:
            parser.error(f"--runs: {pair!r} is not MODEL:RECIPE")
    return args


def run_argv(pair: str, args, work: Path) -> list[str]:
    """The run.py options of one run, at the defaults a user runs: every recipe's epoch looks at each training clip
    once (a random-crop run draws one crop per clip), so that equal epochs are equal data for every model."""
    model, _, recipe = pair.partition(":")
    argv = ["--model", model, "--recipe", recipe, "--data", "synthetic", "--synthetic-clips", str(args.clips),
            "--synthetic-clip-samples", str(args.clip_samples), "--cache-dir", str(work / "cache"),
            "--run-dir", str(work / "runs" / f"{model}-{recipe}"), "--max-epochs", str(args.epochs),
            "--seed", str(args.seed), "--logger", "none", "--no-progress", *args.extra.split()]
    if args.quick:
        argv += [*QUICK_ARGS.get(model, []), "--limit-train-batches", "2", "--batch-size", "4"]
    return argv


def run_worker(spec: str) -> int:
    """Subprocess entry: one run.py run with an epoch timer; prints the result as one JSON line."""
    import run
    from experiments.train import run_experiment
    from lightning_modules.registry import build_network

    argv = json.loads(spec)
    options = run.parse_options(argv)
    timer = training.train_phase_timer()
    start = time.perf_counter()
    outcome = run_experiment(options, extra_callbacks=(timer,))
    wall = time.perf_counter() - start
    config = json.loads((outcome.run_dir / "config.json").read_text())
    network = build_network(config["resolved"]["network"])
    test = outcome.metrics["test"]
    result = {"model": options.model, "recipe": options.recipe, "argv": argv,
              "parameters": sum(p.numel() for p in network.parameters()),
              "test_roc_auc": test["roc_auc"], "test_pr_auc": test["pr_auc"], "test_clips": test["n_clips"],
              "best_checkpoint": outcome.metrics.get("best_checkpoint"), "epochs": outcome.metrics["epochs"],
              "train_epoch_seconds": timer.epochs, "run_seconds": wall, "peak_rss_mib": peak_rss_mib(),
              "optimizer": config["optimizer"], "lr": config["lr"], "batch_size": config["resolved"]["batch_size"],
              "segments_per_clip": config["resolved"]["layout"]["segments_per_clip"],
              "train_crop": config["resolved"]["layout"]["train_crop"],
              "random_crops": config["resolved"]["layout"].get("random_crops"),
              "segment_samples": config["resolved"]["layout"]["segment_samples"]}
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def measure(pair: str, args, work: Path) -> dict:
    argv = run_argv(pair, args, work)
    shutil.rmtree(argv[argv.index("--run-dir") + 1], ignore_errors=True)  # a fresh run, never a finished one
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(argv)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {pair} run failed (exit {done.returncode}); output:\n{done.stdout[-6000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def _epoch(result: dict) -> float:
    """The median training-phase time of the run's epochs after the first (all of them for one epoch)."""
    import statistics

    times = result["train_epoch_seconds"]
    return statistics.median(times[1:] if len(times) > 1 else times)


def _crops(result: dict) -> str:
    """What one training epoch reads per clip."""
    if result.get("train_crop") != "random":
        return f"{result['segments_per_clip']} fixed segment(s) per clip"
    return f"{result.get('random_crops') or result['segments_per_clip']} random crop(s) per clip"


def build_report(args, info, results: list[dict], command) -> tuple[dict, str]:
    """The report of the runs measured so far (written after each run: a stopped benchmark keeps them)."""
    base = results[0]
    for r in results:
        r["epoch_seconds"] = _epoch(r)
    ratios = {
        "roc_auc_minus_baseline": {f"{r['model']}:{r['recipe']}": r["test_roc_auc"] - base["test_roc_auc"]
                                   for r in results[1:]},
        "epoch_time_vs_baseline": {f"{r['model']}:{r['recipe']}": r["epoch_seconds"] / base["epoch_seconds"]
                                   for r in results},
    }
    payload = {"benchmark": NAME, "quick": args.quick, "device": "cpu", "machine": info,
               "settings": {"clips": args.clips, "clip_samples": args.clip_samples, "epochs": args.epochs,
                            "seed": args.seed, "extra": args.extra, "baseline": f"{base['model']}:{base['recipe']}"},
               "ratios": ratios, "runs": results, "complete": len(results) == len(args.runs),
               "planned_runs": args.runs}
    ranked = sorted(results, key=lambda r: -r["test_roc_auc"])
    rows = [[f"`{r['model']}`", r["recipe"], f"{r['parameters']:,}", f"{r['test_roc_auc']:.4f}",
             f"{r['test_pr_auc']:.4f}", f"{r['test_roc_auc'] - base['test_roc_auc']:+.4f}", r["epoch_seconds"],
             ratios["epoch_time_vs_baseline"][f"{r['model']}:{r['recipe']}"], r["run_seconds"], r["peak_rss_mib"],
             f"{r['optimizer']} {r['lr']:g}, batch {r['batch_size']}, {_crops(r)}, "
             f"{r['segments_per_clip']} x {r['segment_samples']:,} samples averaged"] for r in ranked]
    md = [report_header("Models and recipes on the generated data (CPU)", info, args.quick, command),
          f"Each run: `run.py --model M --recipe R --data synthetic --synthetic-clips {args.clips} "
          f"--synthetic-clip-samples {args.clip_samples} --max-epochs {args.epochs} --seed {args.seed} --logger none` "
          f"{args.extra}(models at their registry defaults; every recipe's epoch reads each training clip once), "
          "in a fresh subprocess; test metrics of the best "
          "checkpoint on the generated test clips; epoch s = median training phase of the epochs after the first; "
          "run s = the whole run (data module set-up, training, validation, test, result files); peak RSS = the "
          f"run's main process. Baseline: `{base['model']}` with `{base['recipe']}`. Ranked by test ROC-AUC.\n",
          markdown_table(["model", "recipe", "parameters", "test ROC-AUC", "test PR-AUC", "ROC-AUC vs baseline",
                          "epoch s", "epoch x baseline", "run s", "peak RSS MiB", "as trained"], rows)]
    if len(results) < len(args.runs):
        md.append(f"\n**Partial: {len(results)} of {len(args.runs)} runs** (not yet run: "
                  f"{', '.join(args.runs[len(results):])}).")
    load = info.get("load_average_at_start")
    if load:
        md.append(f"\nLoad: the 1-minute load average was {load[0]:.2f} on {info['cores']} cores when the benchmark "
                  "started; each run is measured once, so the times carry whatever else the machine was doing "
                  "(the test metrics do not depend on it).")
    return payload, "\n".join(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    work, out, info, command = start_benchmark(NAME, args, argv)
    print(f"models benchmark (CPU): work dir {work}; {len(args.runs)} runs of {args.epochs} epochs", flush=True)
    results = []
    for pair in args.runs:
        result = measure(pair, args, work)
        print(f"  {pair}: test ROC-AUC {result['test_roc_auc']:.4f}, PR-AUC {result['test_pr_auc']:.4f}, "
              f"epochs {[round(t, 1) for t in result['train_epoch_seconds']]} s, run {result['run_seconds']:.0f} s, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
        results.append(result)
        if len(results) < len(args.runs):
            write_outputs(out, NAME, *build_report(args, info, results, command), args.quick)
    payload, markdown = build_report(args, info, results, command)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
