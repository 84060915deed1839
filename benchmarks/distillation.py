#!/usr/bin/env python
"""Distillation and self-training on the generated data: do they help a model trained alone, and by how much?

Issue 30 §3. Every run is a real `run.py` training run (the suite's `run_experiment`) of the same model, recipe
and number of epochs on the suite's generated MTAT-layout data (`--data synthetic`), measured side by side:

* the student alone (seeds `--seeds`);
* the teachers: the same model with other seeds (`--teacher-seeds`), and their ensemble (`--evaluate T T T`);
* the distilled student (`--teacher T T T`, the defaults `--distill-weight 0.9 --distill-temperature 1`);
* the self-trained student (`--teacher T T T --unlabeled POOL`): POOL is a folder of the MP3s of another
  generated stand-in (another `--synthetic-seed`), its tags left behind.

The comparison is `--compare`'s (experiments/reporting/compare.py): mean ± std over seeds, 95% BCa bootstrap
intervals over the test clips, and the paired difference of each row with the student alone (its interval and
p-value). Beside them: each run's training-phase time per epoch (first batch to last optimizer step), which
gives the on-the-fly teachers' share of a step.

Runs are kept in the work folder and reused when the benchmark is started again (a stopped benchmark loses at
most the run in progress, whose timing is then measured again).

Run from the repository root:  python benchmarks/distillation.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from benchmarks import training  # noqa: E402
from benchmarks.common import (  # noqa: E402
    base_parser,
    markdown_table,
    publish,
    report_header,
    start_benchmark,
)

NAME = "distillation"
CLIP_SAMPLES = 59_049
"""3.7 s clips: a CPU-sized benchmark (docs/distillation.md states the sizes)."""
MODEL_ARGS = ["--model", "mel_cnn", "--hop-length", "512", "--n-mels", "96", "--mel-backend", "torchaudio",
              "--optimizer", "adam", "--lr", "0.002"]
"""The one model and recipe of every run: the paper's 2D CNN on 3.7 s clips (hop 512, 96 Mel bands), Adam."""
QUICK_ARGS = ["--limit-train-batches", "2", "--batch-size", "4", "--eval-batch-size", "8"]
POOL_SEED = 1
"""The generated stand-in whose MP3s are the unlabelled pool (the labelled data are seed 0)."""


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--clips", type=int, default=None, help="labelled generated clips (default 960; quick 48)")
    parser.add_argument("--pool-clips", type=int, default=None,
                        help="clips of the generated stand-in whose audio is the unlabelled pool (default 960; quick 24)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default 5; quick 1)")
    parser.add_argument("--seeds", default=None, help="seeds of the student runs (default 0,1,2; quick 0)")
    parser.add_argument("--teacher-seeds", default=None, help="seeds of the teachers (default 10,11,12; quick 10,11)")
    parser.add_argument("--extra", default="", help="run.py options added to every run")
    args = parser.parse_args(argv)
    q = args.quick
    args.clips = args.clips or (48 if q else 960)
    args.pool_clips = args.pool_clips or (24 if q else 960)
    args.epochs = args.epochs or (1 if q else 5)
    args.seeds = [int(s) for s in (args.seeds or ("0" if q else "0,1,2")).split(",")]
    args.teacher_seeds = [int(s) for s in (args.teacher_seeds or ("10,11" if q else "10,11,12")).split(",")]
    return args


def data_args(args, work: Path) -> list[str]:
    return ["--data", "synthetic", "--synthetic-clips", str(args.clips), "--synthetic-clip-samples",
            str(CLIP_SAMPLES), "--cache-dir", str(work / "cache"), "--logger", "none", "--no-progress",
            "--no-figures", *(QUICK_ARGS if args.quick else []), *args.extra.split()]


def run_argv(args, work: Path, seed: int, run_dir: Path, *more: str, epochs: int | None = None) -> list[str]:
    return [*MODEL_ARGS, *data_args(args, work), "--max-epochs", str(epochs or args.epochs), "--seed", str(seed),
            "--run-dir", str(run_dir), *more]


def unlabeled_pool(args, work: Path) -> Path:
    """A folder of the MP3s of another generated stand-in (links), without its annotations."""
    from datamodules.datasets.mtat.standin import ensure_synthetic_mtat

    source = Path(ensure_synthetic_mtat(work / "cache", n_clips=args.pool_clips, clip_samples=CLIP_SAMPLES,
                                        seed=POOL_SEED, progress=False))
    pool = work / f"pool-{args.pool_clips}"
    pool.mkdir(parents=True, exist_ok=True)
    for mp3 in sorted(source.glob("mp3/*/*.mp3")):
        link = pool / f"{mp3.parent.name}-{mp3.name}"
        if not link.is_symlink():
            link.symlink_to(mp3)
    return pool


def train(argv: list[str], done: dict, key: str, ledger: Path) -> dict:
    """One training run (reused when the ledger has it): test metrics, epoch times, wall time."""
    if key in done and done[key]["argv"] == argv and (Path(done[key]["run_dir"]) / "metrics.json").is_file():
        return done[key]
    import shutil

    import run
    from experiments.train import run_experiment

    options = run.parse_options(argv)
    shutil.rmtree(options.run_dir, ignore_errors=True)  # a fresh, timed run
    timer = training.train_phase_timer()
    start = time.perf_counter()
    outcome = run_experiment(options, extra_callbacks=(timer,))
    wall = time.perf_counter() - start
    test = outcome.metrics["test"]
    result = {"run_dir": str(outcome.run_dir), "argv": argv, "test_roc_auc": test["roc_auc"],
              "test_pr_auc": test["pr_auc"], "epochs": outcome.metrics["epochs"],
              "train_epoch_seconds": timer.epochs, "run_seconds": wall}
    done[key] = result
    ledger.write_text(json.dumps(done, indent=1))
    print(f"  {key}: test ROC-AUC {result['test_roc_auc']:.4f}, PR-AUC {result['test_pr_auc']:.4f}, epochs "
          f"{[round(t, 1) for t in timer.epochs]} s, run {wall:.0f} s", flush=True)
    return result


def teachers_on_splits(argv: list[str]) -> dict:
    """What the distilled student learns from: the teachers' ensemble probabilities on the training crops (the
    soft targets) and on the test clips, against the true tags: macro ROC-AUC, and the mean |p - y|."""
    import torch
    from torchmetrics.functional.classification import multilabel_auroc

    import run
    from experiments.data import prepare_data_once
    from experiments.resolve import build_datamodule, resolve
    from lightning_modules.distillation import TeacherEnsemble, teacher_from_checkpoint

    resolved = resolve(run.parse_options(argv))
    datamodule = build_datamodule(resolved)
    prepare_data_once(datamodule)
    datamodule.setup("fit")
    ensemble = TeacherEnsemble([teacher_from_checkpoint(t.hparams, t.state, t.label) for t in resolved.teachers],
                               0.9, 1.0)
    out = {}
    for split in ("train", "test"):
        dataset = datamodule.dataset(split)
        probs, targets = [], []
        for start in range(0, len(dataset), 64):
            items = [dataset[(i, 0)] for i in range(start, min(start + 64, len(dataset)))]
            probs.append(ensemble.probabilities(torch.stack([item["waveform"] for item in items])))
            targets.append(torch.stack([item["target"] for item in items]))
        p, y = torch.cat(probs), torch.cat(targets)
        scored = (y.sum(0) > 0) & (y.sum(0) < len(y))  # tags with a positive and a negative crop
        auc = multilabel_auroc(p[:, scored], y[:, scored].long(), num_labels=int(scored.sum()), average="macro")
        out[split] = {"crops": len(y), "roc_auc": float(auc), "mean_abs_gap": float((p - y).abs().mean()),
                      "mean_prob_positive": float(p[y > 0].mean()), "mean_prob_negative": float(p[y == 0].mean())}
    return out


def epoch_seconds(result: dict) -> float:
    """The median training phase of the run's epochs after the first (all of them for one epoch)."""
    times = result["train_epoch_seconds"]
    return statistics.median(times[1:] if len(times) > 1 else times)


ROWS = (("student", "student alone"), ("student_long", "student alone, 2x epochs"),
        ("ensemble", "teachers' ensemble"), ("distilled", "distilled student"),
        ("selftrained", "self-trained student"))


def main(argv=None) -> int:
    args = parse_args(argv)
    work, out, info, command = start_benchmark(NAME, args, argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    runs = work / ("runs-quick" if args.quick else "runs")  # the quick mode's tiny runs never stand in for real ones
    ledger = work / f"{NAME}{'-quick' if args.quick else ''}-runs.json"
    done = json.loads(ledger.read_text()) if ledger.is_file() else {}
    settings = {"clips": args.clips, "clip_samples": CLIP_SAMPLES, "pool_clips": args.pool_clips,
                "pool_seed": POOL_SEED, "epochs": args.epochs, "seeds": args.seeds,
                "teacher_seeds": args.teacher_seeds, "model_args": MODEL_ARGS, "extra": args.extra}
    if done.get("settings") != settings:
        done = {"settings": settings}
    print(f"distillation benchmark: work dir {work}; {len(args.teacher_seeds)} teachers, {len(args.seeds)} seed(s) of "
          f"each student row, {args.epochs} epoch(s)", flush=True)
    started = time.perf_counter()
    teachers = [train(run_argv(args, work, s, runs / f"teacher-{s}"), done, f"teacher-{s}", ledger)
                for s in args.teacher_seeds]
    teacher_dirs = [t["run_dir"] for t in teachers]
    ensemble_dir = runs / "ensemble"
    if done.get("ensemble") != teacher_dirs or not (ensemble_dir / "metrics.json").is_file():
        import shutil

        import run

        shutil.rmtree(ensemble_dir, ignore_errors=True)  # an evaluation of other teachers' runs
        assert run.main(["--evaluate", *teacher_dirs, "--run-dir", str(ensemble_dir), *data_args(args, work)]) == 0
        done["ensemble"] = teacher_dirs
        ledger.write_text(json.dumps(done, indent=1))
    pool = unlabeled_pool(args, work)
    results = {"student": [], "student_long": [], "distilled": [], "selftrained": []}
    for seed in args.seeds:
        results["student"].append(train(run_argv(args, work, seed, runs / f"student-{seed}"), done,
                                        f"student-{seed}", ledger))
        # the control of self-training: its epochs hold twice the crops, so as many steps as 2x epochs alone
        results["student_long"].append(train(run_argv(args, work, seed, runs / f"student-long-{seed}",
                                                      epochs=2 * args.epochs), done, f"student-long-{seed}", ledger))
        results["distilled"].append(train(run_argv(args, work, seed, runs / f"distilled-{seed}", "--teacher",
                                                   *teacher_dirs), done, f"distilled-{seed}", ledger))
        results["selftrained"].append(train(run_argv(args, work, seed, runs / f"selftrained-{seed}", "--teacher",
                                                     *teacher_dirs, "--unlabeled", str(pool)), done,
                                            f"selftrained-{seed}", ledger))
    total = time.perf_counter() - started
    fit = teachers_on_splits(run_argv(args, work, args.seeds[0], runs / "probe", "--teacher", *teacher_dirs))

    from experiments.reporting.compare import compare_runs

    folders = {"student": [r["run_dir"] for r in results["student"]], "ensemble": [str(ensemble_dir)],
               "student_long": [r["run_dir"] for r in results["student_long"]],
               "distilled": [r["run_dir"] for r in results["distilled"]],
               "selftrained": [r["run_dir"] for r in results["selftrained"]]}
    comparison = compare_runs([f for key, _ in ROWS for f in folders[key]], work / "comparison",
                              reference=folders["student"][0], n_resamples=200 if args.quick else 1000,
                              log_wandb=False)
    if len(comparison.rows) != len(ROWS):
        raise RuntimeError(f"the comparison grouped the runs into {len(comparison.rows)} rows, expected {len(ROWS)}")
    by_label = {key: dict(row, row=label) for (key, label), row in zip(ROWS, comparison.rows)}
    payload, markdown = report(args, info, command, settings, teachers, results, by_label, comparison, total, fit)
    return publish(out, NAME, payload, markdown, args.quick)


def _ci(row: dict, metric: str) -> str:
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    return "not given" if low is None or low != low else f"[{low:.4f}, {high:.4f}]"


def _diff(row: dict, metric: str) -> str:
    if row.get("reference"):
        return "reference"
    value, low, high, p = (row.get(f"{metric}_diff{s}") for s in ("", "_low", "_high", "_p"))
    interval = "" if low is None or low != low else f" [{low:+.4f}, {high:+.4f}]"
    p_text = "" if p is None or p != p else f", p = {p:.3f}"
    return f"{value:+.4f}{interval}{p_text}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def load_note(info: dict) -> str:
    load = info.get("load_average_at_start")
    if not load:
        return ""
    return (f"Load: the 1-minute load average was {load[0]:.2f} on {info['cores']} cores when the benchmark started; "
            "each run is measured once, so its times carry whatever else the machine was doing (the test metrics do "
            "not depend on it).")


def report(args, info, command, settings, teachers, results, rows, comparison, total, fit) -> tuple[dict, str]:
    student_epoch = _mean([epoch_seconds(r) for r in results["student"]])
    timing = {key: _mean([epoch_seconds(r) for r in rs]) for key, rs in results.items()}
    timing["teacher"] = _mean([epoch_seconds(r) for r in teachers])
    run_time = {key: _mean([r["run_seconds"] for r in rs]) for key, rs in results.items()}
    ratios = {"epoch_time_vs_student": {key: value / student_epoch for key, value in timing.items()},
              "run_time_vs_student": {key: value / run_time["student"] for key, value in run_time.items()},
              "roc_auc_minus_student": {key: rows[key]["roc_auc_diff"] for key in rows if key != "student"},
              "pr_auc_minus_student": {key: rows[key]["pr_auc_diff"] for key in rows if key != "student"}}
    payload = {"benchmark": NAME, "quick": args.quick, "device": "cpu", "machine": info, "settings": settings,
               "total_seconds": total, "teachers": teachers, "runs": results, "ratios": ratios,
               "comparison": {key: {k: v for k, v in row.items() if not isinstance(v, (list, dict))}
                              for key, row in rows.items()},
               "verdict": comparison.verdict, "teachers_on_splits": fit}
    table = []
    for key, label in ROWS:
        row = rows[key]
        seeds = ",".join(map(str, args.teacher_seeds)) if key == "ensemble" else row["seeds"]
        std = row.get("roc_auc_std")
        pr_std = row.get("pr_auc_std")
        table.append([label, seeds,
                      f"{row['roc_auc']:.4f}" + (f" ± {std:.4f}" if std else ""), _ci(row, "roc_auc"),
                      _diff(row, "roc_auc"),
                      f"{row['pr_auc']:.4f}" + (f" ± {pr_std:.4f}" if pr_std else ""), _ci(row, "pr_auc"),
                      _diff(row, "pr_auc"),
                      f"{timing[key]:.1f}" if key in timing else "—",
                      f"{run_time[key]:.0f}" if key in run_time else "—"])
    teacher_rows = [[f"teacher seed {s}", f"{t['test_roc_auc']:.4f}", f"{t['test_pr_auc']:.4f}",
                     f"{epoch_seconds(t):.1f}"] for s, t in zip(args.teacher_seeds, teachers)]
    model = " ".join(MODEL_ARGS)
    md = [report_header("Distillation and self-training on the generated data (CPU)", info, args.quick, command),
          f"Every run: `python run.py {model} --data synthetic --synthetic-clips {args.clips} "
          f"--synthetic-clip-samples {CLIP_SAMPLES} --max-epochs {args.epochs} --seed S` "
          f"{' '.join(QUICK_ARGS) + ' ' if args.quick else ''}{args.extra}(the folder split: "
          "75% / 6.25% / 18.75% of the clips for training, validation and test; model selection on the "
          "validation loss). Teachers: seeds "
          f"{', '.join(map(str, args.teacher_seeds))}; their ensemble: `--evaluate` of the "
          f"{len(teachers)}. Distilled: `--teacher` the {len(teachers)} (defaults: `--distill-weight 0.9 "
          "--distill-temperature 1`). Self-trained: the same plus `--unlabeled POOL`, POOL the "
          f"{args.pool_clips} MP3s of the generated stand-in of seed {POOL_SEED} without their tags "
          "(`--unlabeled-ratio 1`: one unlabelled crop per labelled clip in an epoch). Student alone, 2x epochs: "
          f"`--max-epochs {2 * args.epochs}`, the control of self-training, whose epochs hold twice the crops (as many "
          "optimizer steps as it, on the labelled clips alone). Seeds of the student rows: "
          f"{', '.join(map(str, args.seeds))}.\n",
          "Intervals: 95% BCa bootstrap over the test clips (`--compare`; for a row of several seeds, of the "
          "seed-mean metric); the differences are paired with the student alone (same test clips), with their "
          "interval and p-value. Epoch s: the mean over the row's runs of the median training phase of the epochs "
          "after the first; run s: the mean wall time of the row's runs, start to test metrics (with the "
          "teachers' one labelling pass of a run with fixed crops, which is outside the epochs).\n",
          markdown_table(["row", "seeds", "test ROC-AUC", "95% interval", "vs student alone", "test PR-AUC",
                          "95% interval", "vs student alone", "epoch s", "run s"], table), "",
          "The teachers (each a run of the student's model and recipe):", "",
          markdown_table(["teacher", "test ROC-AUC", "test PR-AUC", "epoch s"], teacher_rows), "",
          f"Relative to the student alone, per epoch and per run: distilled "
          f"{ratios['epoch_time_vs_student']['distilled']:.2f}x and {ratios['run_time_vs_student']['distilled']:.2f}x "
          f"(these clips are the student's whole input, so its crops are fixed: the {len(teachers)} teachers label "
          "them once, before the first epoch); self-trained "
          f"{ratios['epoch_time_vs_student']['selftrained']:.2f}x and {ratios['run_time_vs_student']['selftrained']:.2f}x "
          "(twice the crops, and the pool's random crops labelled by the teachers as training goes).",
          "", comparison.verdict or "", "",
          "What the distilled student learns from: the teachers' ensemble on the training crops (its soft "
          "targets) and on the test clips, against the true tags:", "",
          markdown_table(["crops", "count", "ROC-AUC", "mean |p - y|", "mean p, positives", "mean p, negatives"],
                         [[split, f"{v['crops']}", f"{v['roc_auc']:.4f}", f"{v['mean_abs_gap']:.4f}",
                           f"{v['mean_prob_positive']:.4f}", f"{v['mean_prob_negative']:.4f}"]
                          for split, v in fit.items()]), "",
          f"Whole benchmark: {total / 60:.1f} min (runs reused from an earlier "
          "start excluded).", "", load_note(info)]
    return payload, "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
