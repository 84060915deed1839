#!/usr/bin/env python
"""Music auto-tagging on MagnaTagATune: train, evaluate, summarise, sweep, tag, download.

    python run.py --model mel_cnn --data synthetic          # train + test on the generated stand-in
    python run.py --model lstm_mel --data /data/mtat        # the paper's LSTM on real MTAT
    python run.py --model sample_cnn --summary              # the network as Table 1 lists it
    python run.py --resume runs/mel_cnn-seed0-1a2b3c4d      # continue a killed run
    python run.py --sweep lstm_mel --trials 50              # one worker of an Optuna study (start many)
    python run.py --tag song.mp3 music/ --checkpoint runs/mel_cnn-seed0-1a2b3c4d   # tag your own music
    python run.py --tag music/ --checkpoint RUN --out tags.csv --embeddings emb.npy   # a catalogue, resumable
    python run.py --similar song.mp3 --embeddings emb.npy --checkpoint RUN         # the nearest tracks
    python run.py --export RUN --out exported/ --format onnx                       # a portable model

Every training option defaults to the paper's value where the paper gives one; `--help` lists them.
Problems you can fix (missing files, bad options) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from experiments.cli import given_run_options
from experiments.options import RUN_OPTION_NAMES
from infrastructure.errors import ConfigError, Interrupted, RunStopped, SuiteError

USAGE_ERROR = 2


def build_parser():
    """The command line (declared once, in experiments/options.py)."""
    from experiments.cli import build_parser as build

    return build(__doc__)


def parse_options(argv: list[str]):
    """The normalised run options of a command line (what a run made from it would use)."""
    from experiments.cli import parse_command

    return parse_command(argv, build_parser()).run.normalised()


def main(argv: list[str] | None = None) -> int:
    from experiments.cli import parse_command

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        command = parse_command(argv, parser)
        _mask_storage_password_in_argv(command)
        mode = command.mode
        if mode.print_config:
            return _print_config(command)
        if mode.download:
            return _download(mode.download, mode.download_url, command.run)
        if mode.tag:
            return _tag(command)
        if mode.similar:
            return _similar(command)
        if mode.export:
            return _export(command)
        if command.tagging.checkpoint:
            parser.error("--checkpoint goes with --tag PATH... or --similar FILE")
        if mode.resume:
            return _resume(mode.resume)
        if mode.evaluate:
            return _evaluate(parser, command)
        if command.comparison.compare:
            return _compare(command)
        if command.comparison.reproduce:
            return _reproduce(command, argv)
        if command.sweep.sweep or command.sweep.sweep_report:
            return _sweep(parser, command)
        if not command.run.model:
            parser.error("--model is required (or --resume RUN_DIR)")
        options = command.run.normalised()
        if mode.summary:
            return _summary(options)
        return _train(options)
    except SuiteError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    except RunStopped as stop:  # Ctrl-C or SIGTERM in training, a killed loader worker: the run folder stays resumable
        print(stop.message, file=sys.stderr)
        gc.freeze()  # the interpreter's last garbage collection over torch's objects would take seconds at exit
        return stop.code
    except Interrupted as stop:  # Ctrl-C in a data stage: it says what is kept and how to continue
        print(f"interrupted: {stop.message}", file=sys.stderr)
        gc.freeze()
        return 130
    except KeyboardInterrupt:  # Ctrl-C anywhere else
        print("interrupted (Ctrl-C): what was finished is kept (files are written whole or not at all); rerun the "
              "same command to continue",
              file=sys.stderr)
        gc.freeze()
        return 130


def _mask_storage_password_in_argv(command) -> None:
    """A --storage password given on the command line becomes *** in `sys.argv`, so that what records the command
    line (W&B's run metadata) never holds it; `ps` still shows the original: hence PGPASSWORD
    (docs/reading-results.md)."""
    from experiments.options import masked_storage

    url = command.sweep.storage
    if url and masked_storage(url) != url:
        sys.argv[:] = [arg.replace(url, masked_storage(url)) for arg in sys.argv]


def _print_config(command) -> int:
    from experiments.cli import dump_yaml

    sweeping = command.sweep.sweep or command.sweep.sweep_report
    options, settings = command.run, command.sweep
    if command.sweep.sweep:
        from sweeps.plan import stand_in_defaults

        options = options.replace(model=options.model or command.sweep.sweep)
        options, settings, _ = stand_in_defaults(options, settings, set(command.given))
    print(dump_yaml(options, settings if sweeping else None), end="")
    return 0


def _one_line(error: SuiteError) -> str:
    """The error's message on one line.

    A DataLoader worker re-raises an error of its dataset as the same class with the worker's
    traceback prepended ("Caught DataError in DataLoader worker process 0. Original Traceback ...
    infrastructure.errors.DataError: <message>"): keep the message, drop the traceback.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        last = next((line for line in reversed(lines) if line.startswith(prefix)), lines[-1])
        return last.removeprefix(prefix)
    return " ".join(lines)


def _train(options) -> int:
    from experiments.interruptions import clean_stops
    from experiments.run_folder import run_dir_of
    from experiments.train import run_experiment

    if options.rounds > 1:  # self-training or distillation in rounds, each a run folder (experiments/rounds.py)
        from experiments.rounds import run_rounds

        for round_, outcome in enumerate(run_rounds(options), start=1):
            if outcome.metrics:
                print(f"round {round_}: ", end="")
            _print_outcome(outcome, "run folder")
        return 0
    with clean_stops(run_dir_of(options)):
        outcome = run_experiment(options)
    _print_outcome(outcome, "run folder")
    return 0


def _print_outcome(outcome, folder: str, clips: bool = False) -> None:
    """The test line and the folder of a training run or an evaluation."""
    if outcome.metrics:
        test = outcome.metrics["test"]
        counted = f"  ({test['n_clips']} clips)" if clips else ""
        print(f"test ROC-AUC {test['roc_auc']:.4f}  PR-AUC {test['pr_auc']:.4f}  "
              f"TPR {test['tpr']:.3f}  FPR {test['fpr']:.3f}{counted}")
        print(f"{folder}: {outcome.run_dir}")


def _sweep(parser, command) -> int:
    from sweeps.plan import describe_study, format_plan, plan_study, say, stand_in_defaults

    run, sweep = command.run, command.sweep
    if sweep.sweep and run.model and run.model != sweep.sweep:
        parser.error(f"--model {run.model} and --sweep {sweep.sweep} disagree; --sweep MODEL is enough")
    if run.run_dir:
        parser.error("--run-dir does not apply to a sweep: each trial gets a folder in RUNS_ROOT/sweeps/STUDY/trials")
    if command.mode.summary:
        parser.error("--summary does not go with --sweep")
    options = run.replace(model=sweep.sweep or run.model).normalised()
    fixed = given_run_options(command)
    options, sweep, choices = stand_in_defaults(options, sweep, set(command.given))
    fixed |= {c.name for c in choices if hasattr(options, c.name)}  # chosen here: fixed for every trial
    plan = None
    if not sweep.sweep_report:
        say(format_plan(options.model, options, sweep, choices))
        plan = plan_study(options, sweep, fixed)  # the study and its space, before Optuna and Lightning load
        for line in describe_study(plan):
            say(line)
    from sweeps.report import format_summary
    from sweeps.study import run_sweep

    outcome = run_sweep(options, sweep, fixed=fixed, plan=plan)
    print(format_summary(outcome.report))
    return 0


def _batch_size(command) -> int | None:
    """--batch-size or --eval-batch-size, when given: segments per forward pass of tagging."""
    given = command.given
    run = command.run
    return run.eval_batch_size if "eval_batch_size" in given else run.batch_size if "batch_size" in given else None


def _tag(command) -> int:
    tagging, run, mode = command.tagging, command.run, command.mode
    if not tagging.checkpoint:
        raise ConfigError("--tag needs --checkpoint CKPT (a .ckpt file, a run folder or an exported folder)")
    if mode.out:
        from tagging.catalogue import run_catalogue

        for name in ("json", "taggram", "taggram_hop"):
            if name in command.given:
                raise ConfigError(f"--{name.replace('_', '-')} goes with --tag without --out (a report per file); "
                                  "--out writes a catalogue")
        return run_catalogue(mode.tag, tagging.checkpoint, mode.out, embeddings=tagging.embeddings,
                             top_k=tagging.top_k, workers=run.prepare_workers, accelerator=run.accelerator,
                             batch_size=_batch_size(command), progress=run.progress, model=run.model,
                             start_s=tagging.start, duration_s=tagging.duration)
    if tagging.embeddings:
        raise ConfigError("--embeddings goes with --tag DIR --out FILE (a catalogue) or with --similar FILE")
    from tagging.report import run_tagging

    return run_tagging(mode.tag, tagging.checkpoint, top_k=tagging.top_k, json_output=tagging.json,
                       taggram=tagging.taggram, start_s=tagging.start, duration_s=tagging.duration,
                       accelerator=run.accelerator, progress=run.progress, model=run.model,
                       taggram_hop_s=tagging.taggram_hop, batch_size=_batch_size(command))


def _similar(command) -> int:
    tagging = command.tagging
    if not tagging.checkpoint or not tagging.embeddings:
        raise ConfigError("--similar FILE needs --embeddings PATH (written by --tag --out) and --checkpoint (the "
                          "model that wrote them)")
    from tagging.similar import run_similar

    return run_similar(command.mode.similar, tagging.embeddings, tagging.checkpoint, top_k=tagging.top_k,
                       json_output=tagging.json, accelerator=command.run.accelerator)


def _export(command) -> int:
    from tagging.export import export_model
    from tagging.report import load_tagger

    if not command.mode.out:
        raise ConfigError("--export RUN_DIR needs --out DIR (the folder to write)")
    formats = ("safetensors",) if command.tagging.format == "safetensors" else ("safetensors", "onnx")
    tagger = load_tagger(command.mode.export, "cpu")
    folder = export_model(tagger, command.mode.out, formats=formats)
    print(f"exported {tagger.model_name} ({len(tagger.tags)} tags, identity {tagger.identity}) to {folder}")
    return 0


def _evaluate(parser, command) -> int:
    """--evaluate CKPT|RUN_DIR...: the checkpoint's run options, overridden by the options given here, then test;
    several checkpoints: their ensemble."""
    from experiments.evaluate import evaluate_checkpoint

    if command.mode.summary or command.sweep.sweep or command.sweep.sweep_report:
        parser.error("--evaluate does not go with --summary or --sweep")
    paths = command.mode.evaluate
    run_dir = Path(command.run.run_dir).expanduser().resolve() if command.run.run_dir else None
    if len(paths) > 1:
        from experiments.ensemble import evaluate_ensemble

        members = []
        for path in paths:
            checkpoint, _, options = _evaluation_options(command, path)
            members.append((path, options, checkpoint))
        _print_outcome(evaluate_ensemble(members, run_dir), "evaluation folder", clips=True)
        return 0
    checkpoint, source_run, options = _evaluation_options(command, paths[0])
    if run_dir is None:
        run_dir = (source_run / "evaluations" / checkpoint.stem if source_run is not None
                   else checkpoint.parent / f"{checkpoint.stem}-evaluation")
    _print_outcome(evaluate_checkpoint(options, checkpoint, run_dir), "evaluation folder", clips=True)
    return 0


def _evaluation_options(command, path: str):
    """(checkpoint, its run folder or None, options): the run's saved options, overridden by those given here."""
    from experiments.options import NON_IDENTITY_OPTIONS, RunOptions
    from experiments.run_folder import CONFIG_FILE, locate_checkpoint

    checkpoint, source_run = locate_checkpoint(path)
    options = command.run
    if source_run is not None:
        saved = RunOptions.from_dict(json.loads((source_run / CONFIG_FILE).read_text()))
        given = given_run_options(command)
        options = options.replace(**{k: getattr(saved, k) for k in RUN_OPTION_NAMES
                                     if k not in given and k not in NON_IDENTITY_OPTIONS})
    return checkpoint, source_run, options.normalised()


def _compare(command) -> int:
    from experiments.reporting.compare import compare_runs

    comparison = command.comparison
    out = Path(command.mode.out) if command.mode.out else Path(command.run.runs_root) / "comparison"
    result = compare_runs(comparison.compare, out, reference=comparison.reference, n_resamples=comparison.bootstrap,
                          seed=comparison.bootstrap_seed)
    print(f"comparison of {len(result.rows)} model(s) on {result.n_clips} test clips: {result.files['md']}")
    if result.verdict:
        print(result.verdict)
    return 0


def _reproduce(command, argv: list[str]) -> int:
    from experiments.reproduce import reproduce
    from experiments.run_folder import default_run_dir

    comparison = command.comparison
    return reproduce(comparison.reproduce, comparison.seeds, argv, train=main,
                     runs_root=str(Path(command.run.runs_root).resolve()),
                     run_dir_of=lambda run_argv: default_run_dir(parse_options(run_argv)), out=command.mode.out,
                     dry_run=comparison.dry_run, task_index=comparison.task_index, n_resamples=comparison.bootstrap,
                     bootstrap_seed=comparison.bootstrap_seed)


def _download(dest: str, base_url: str | None, options) -> int:
    from datamodules.datasets.mtat.download import MTAT_BASE_URL, download_mtat

    progress = options.progress
    if options.dataset == "mtg-jamendo":
        from datamodules.datasets.jamendo.download import download_jamendo

        quality = options.jamendo_quality or "low"
        data_dir = download_jamendo(Path(dest).expanduser().resolve(), quality=quality, base_url=base_url,
                                    progress=progress)
        print(f"MTG-Jamendo's {quality}-quality audio is ready in {data_dir}: put the split TSVs (splits/split-0/...) "
              f"there or give --jamendo-meta, then train with --data {data_dir} --dataset mtg-jamendo"
              + (" --jamendo-quality full" if quality == "full" else ""))
        return 0
    data_dir = download_mtat(Path(dest).expanduser().resolve(), base_url=base_url or MTAT_BASE_URL, progress=progress)
    print(f"MagnaTagATune is ready in {data_dir}: train with --data {data_dir}")
    return 0


def _resume(run_dir: str) -> int:
    from experiments.options import RunOptions
    from experiments.run_folder import CONFIG_FILE
    from infrastructure.errors import DataError

    path = Path(run_dir).expanduser().resolve() / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{path}: no run configuration here; is {run_dir} a run folder?")
    options = RunOptions.from_dict(json.loads(path.read_text()))
    return _train(options.replace(run_dir=str(path.parent)))


def _summary(options) -> int:
    from experiments.train import describe_network

    print(describe_network(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
