#!/usr/bin/env python
"""Music auto-tagging on MagnaTagATune: train, evaluate, summarise, sweep, tag, download.

    python run.py --model mel_cnn --data synthetic          # train + test on the generated stand-in
    python run.py --model lstm_mel --data /data/mtat        # the paper's LSTM on real MTAT
    python run.py --model sample_cnn --summary              # the network as Table 1 lists it
    python run.py --resume runs/mel_cnn-seed0-1a2b3c4d      # continue a killed run
    python run.py --sweep lstm_mel --trials 50              # one worker of an Optuna study (start many)
    python run.py --tag song.mp3 music/ --checkpoint runs/mel_cnn-seed0-1a2b3c4d   # tag your own music

Every training option defaults to the paper's value where the paper gives one; `--help` lists them.
Problems you can fix (missing files, bad options) end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datamodules.errors import ConfigError, SuiteError

MODEL_CHOICES = ("sample_cnn", "sample_cnn_frames", "mel_cnn", "lstm_mel", "fcn", "crnn", "musicnn", "sample_cnn_se")
TAGGING_OPTIONS = ("tag", "checkpoint", "top_k", "json", "taggram", "start", "duration")  # not training options
SWEEP_OPTIONS = ("sweep", "trials", "timeout", "study_name", "storage", "sweep_report", "pruner",
                 "pruner_startup_trials", "pruner_warmup_epochs", "sweep_space", "sweep_seed", "heartbeat_interval",
                 "grace_period", "max_retry", "max_failures")  # steer the sweep; not training options
USAGE_ERROR = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction_or_count(text: str) -> float | int:
    value = float(text)
    return int(value) if value > 1 and value.is_integer() else value


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: the full usage is dozens of lines, and --help has it."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (--help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    what = parser.add_argument_group("what to do")
    what.add_argument("--model", choices=MODEL_CHOICES,
                      help="architecture: sample_cnn (Table 1, whole 29.1 s clips), sample_cnn_frames (Lee et al.'s "
                           "59,049-sample frames, averaged per clip), mel_cnn (Table 2), lstm_mel (Table 3); from the literature: "
                           "fcn (Choi et al. 2016), crnn (Choi et al. 2017), musicnn (Pons & Serra 2019, 3 s chunks), "
                           "sample_cnn_se (Kim et al. 2018, 59,049-sample frames)")
    what.add_argument("--download", metavar="DIR", help="fetch MagnaTagATune into DIR (the three mp3.zip parts and "
                      "both CSVs from the dataset's home), resuming partial downloads, verifying SHA-256, joining and "
                      "unpacking; then use --data DIR")
    what.add_argument("--download-url", metavar="URL", default=None,
                      help="folder URL to download from instead of the dataset's home (a mirror; http(s):// or file://)")
    what.add_argument("--summary", action="store_true", help="print the network's layers, output shapes and "
                      "parameter counts (PyTorch and the paper's Keras convention) and exit")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, "
                      "with the options saved there")
    what.add_argument("--evaluate", metavar="CKPT|RUN_DIR", help="test a checkpoint (a .ckpt file, or a run folder: its "
                      "best checkpoint) without training, on the data of its run (options given here override "
                      "them); writes metrics.json, per_tag.csv and results.md into --run-dir (default: "
                      "RUN_DIR/evaluations/<checkpoint name>)")
    what.add_argument("--tag", nargs="+", metavar="PATH", help="tag audio files (MP3, WAV, FLAC, OGG, ...; any rate, "
                      "mono or stereo, any length) and folders (walked recursively) with --checkpoint")

    tagging = parser.add_argument_group("tagging your own music (--tag)")
    tagging.add_argument("--checkpoint", metavar="CKPT|RUN_DIR", help="model to tag with: a .ckpt file, or a run "
                         "folder (its best checkpoint)")
    tagging.add_argument("--top-k", type=_positive_int, default=5, help="also list the K highest-scoring tags (5)")
    tagging.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    tagging.add_argument("--taggram", metavar="PNG|DIR", help="plot tag probability over time: a .png for one file, "
                         "else a folder with one PNG per file")
    tagging.add_argument("--start", type=float, default=None, metavar="SECONDS",
                         help="tag from this time in each file (default: its start)")
    tagging.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                         help="tag this many seconds (default: to the end of the file)")

    data = parser.add_argument_group("data")
    data.add_argument("--data", default="synthetic", metavar="DIR|synthetic",
                      help="MTAT folder (annotations_final.csv + mp3/0..f/), or 'synthetic' to generate and use the "
                           "stand-in dataset (default)")
    data.add_argument("--cache-dir", default=None, help="where decoded waveforms and the synthetic dataset are kept "
                      "(default: $MTAT_TAGGING_CACHE or ~/.cache/mtat-tagging)")
    data.add_argument("--tags", choices=("paper", "standard"), default="paper",
                      help="tag vocabulary: 'paper' merges synonyms then keeps the top 50 (default); 'standard' is the "
                           "unmerged top 50 of the literature, for comparison with published results")
    data.add_argument("--n-tags", type=_positive_int, default=50, help="tags kept by the vocabulary (default 50)")
    data.add_argument("--split", choices=("folder", "clean"), default="folder",
                      help="'folder': MTAT folders 0-b train, c valid, d-f test (the paper's; default); 'clean': the "
                           "Lee/Won lists (real MTAT only)")
    data.add_argument("--synthetic-clips", type=_positive_int, default=1200, help="clips in the synthetic dataset")
    data.add_argument("--synthetic-clip-samples", type=_positive_int, default=None,
                      help="clip length of the synthetic dataset in samples at 16 kHz (default: MTAT's 465,984)")
    data.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic dataset")
    data.add_argument("--num-workers", type=int, default=None, help="loader processes per training process "
                      "(default: its share of the usable cores - 1, at most 8)")
    data.add_argument("--prepare-workers", type=int, default=None, help="decoding processes (default: all cores)")

    mel = parser.add_argument_group("Mel frontend (computed on the batch's device; defaults are the model's)")
    mel.add_argument("--n-fft", type=_positive_int, help="FFT window (mel_cnn, lstm_mel: 2048)")
    mel.add_argument("--hop-length", type=_positive_int, help="hop between frames (mel_cnn: 1792, lstm_mel: 512)")
    mel.add_argument("--n-mels", type=_positive_int, help="Mel bands (128)")
    mel.add_argument("--f-min", type=float, help="lowest frequency in Hz (0)")
    mel.add_argument("--f-max", type=float, help="highest frequency in Hz (8000, the Nyquist frequency)")
    mel.add_argument("--mel-compression", choices=("db", "log1p", "none"), help="amplitude compression (db)")
    mel.add_argument("--mel-backend", choices=("nnaudio", "torchaudio"), help="library computing the Mel (nnaudio)")
    mel.add_argument("--segments-per-clip", type=_positive_int,
                     help="segments each clip is cut into; predictions are averaged per clip (lstm_mel: 4)")
    mel.add_argument("--train-crop", choices=("fixed", "random"),
                     help="training sees the evaluation segments ('fixed', default) or random crops of that length")

    opt = parser.add_argument_group("optimisation (paper §4.5)")
    opt.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                     help="'sgd' (the paper's, default) or 'adam' (much faster for lstm_mel; try --lr 0.001)")
    opt.add_argument("--lr", type=float, default=0.01, help="initial learning rate (0.01)")
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    opt.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (0)")
    opt.add_argument("--nesterov", action="store_true", help="Nesterov momentum (off)")
    opt.add_argument("--batch-size", type=_positive_int, default=None,
                     help="segments per batch (the paper is silent; defaults: sample_cnn 16, sample_cnn_frames 23, "
                          "mel_cnn 32, lstm_mel 32)")
    opt.add_argument("--eval-batch-size", type=_positive_int, default=None, help="segments per evaluation batch")
    opt.add_argument("--max-epochs", type=_positive_int, default=100, help="upper bound on epochs (100)")
    opt.add_argument("--local-decay", type=float, default=1e-6, help="formula (1) decay per batch, reset each "
                     "epoch (1e-6; 0 turns it off)")
    opt.add_argument("--local-decay-formula", choices=("paper", "keras"), default="paper",
                     help="'paper': compounding, as printed; 'keras': lr0 / (1 + d * i)")
    opt.add_argument("--patience", type=int, default=3, help="epochs without improvement before a global-decay "
                     "restart (3; 0 turns global decay off)")
    opt.add_argument("--global-decay", type=float, default=0.2, help="formula (2) factor (0.2)")
    opt.add_argument("--max-restarts", type=int, default=4, help="restarts before training stops (4)")
    opt.add_argument("--global-decay-schedule", choices=("paper", "sample_cnn"), default="paper",
                     help="'paper': rate x decay^(n+1) at the (n+1)-th restart, compounding; "
                          "'sample_cnn': lr0 x decay^k at the k-th restart")
    opt.add_argument("--monitor", default="val/loss", help="metric for restarts and the best checkpoint (val/loss)")
    opt.add_argument("--monitor-mode", choices=("min", "max"), default="min", help="min for losses, max for AUCs")
    opt.add_argument("--nonfinite-loss", choices=("stop", "skip"), default="stop",
                     help="on a NaN/inf training loss: stop with a message (default) or skip the batch")
    opt.add_argument("--dropout", type=float, default=None, help="override the network's dropout rate")
    opt.add_argument("--input-norm", action="store_true",
                     help="lstm_mel: batch-normalise the log-Mel bands before the LSTM (not in Table 3; the raw dB "
                          "input saturates the LSTM: recommended)")

    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="seed for weights, order and crops (0)")
    run.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact reruns)")
    run.add_argument("--run-dir", default=None, help="run folder (default: RUNS_ROOT/<model>-seed<seed>-<config hash>;"
                     " rerunning the same command resumes it)")
    run.add_argument("--runs-root", default="runs", help="parent of default run folders (./runs)")
    run.add_argument("--logger", choices=("wandb", "csv", "tensorboard", "none"), default="wandb",
                     help="metrics logger (wandb: online when logged in to W&B, else offline into RUN_DIR/wandb with "
                          "the `wandb sync` command printed at the end; csv and tensorboard write RUN_DIR/logs)")
    run.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (auto)")
    run.add_argument("--devices", default="auto", help="devices (processes) per node: a count, a list of GPU "
                     "indices (0,1), or auto (all GPUs, or 1 on CPU)")
    run.add_argument("--num-nodes", type=_positive_int, default=1, help="nodes (1); under SLURM, as many as the job has")
    run.add_argument("--strategy", choices=("auto", "ddp"), default="auto",
                     help="auto: DDP when devices x nodes > 1, else one device; ddp: always DDP (one process per "
                          "device; run.py is started again for each extra process on this node)")
    run.add_argument("--precision", choices=("32", "bf16-mixed", "16-mixed"), default="32",
                     help="training precision; the Mel frontend always runs in fp32; 16-mixed needs a GPU (32)")
    run.add_argument("--sync-batchnorm", action="store_true", help="batch-norm statistics over the whole batch of "
                     "all GPUs under DDP (GPU only; no effect on one device)")
    run.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                     help="let cuDNN time its algorithms for each new input shape and keep the fastest (GPU; on by "
                          "default, off under --deterministic)")
    run.add_argument("--compile", action="store_true", help="torch.compile the network (the first steps of each "
                     "stage compile it; checkpoints stay loadable without compiling)")
    run.add_argument("--limit-train-batches", type=_fraction_or_count, default=None,
                     help="train on this many batches (int) or this fraction per epoch (quick tries)")
    run.add_argument("--limit-val-batches", type=_fraction_or_count, default=None, help="same for validation")
    run.add_argument("--limit-test-batches", type=_fraction_or_count, default=None, help="same for test")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    run.add_argument("--log-every-n-steps", type=_positive_int, default=None, metavar="N",
                     help="send the training loss and learning rate to the logger and progress bar every N steps "
                          "(10); each such step waits for the GPU, so 1 costs speed on fast models")

    sweep = parser.add_argument_group(
        "sweeps (Optuna; training options given on the command line are fixed for all trials)")
    sweep.add_argument("--sweep", choices=MODEL_CHOICES, metavar="MODEL",
                       help="tune MODEL's search space (sweeps/spaces.py; lstm_mel: FFT, hop, Mel bands, segments per "
                            "clip, lr, global decay): runs trials until the study has --trials, then writes the "
                            "report into RUNS_ROOT/sweeps/STUDY; start it many times (or on many machines) to add workers")
    sweep.add_argument("--trials", type=_positive_int, default=20,
                       help="trials in the whole study, all workers together (complete + pruned; 20)")
    sweep.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="this worker starts no new trial after S seconds")
    sweep.add_argument("--study-name", default=None,
                       help="study name (default: MODEL-<hash of the fixed options and the space>)")
    sweep.add_argument("--storage", default=None, metavar="URL",
                       help="sqlite:///PATH, postgresql://USER:PW@HOST/DB, or journal:PATH on a shared file system "
                            "(default: sqlite in RUNS_ROOT/sweeps/STUDY/study.db)")
    sweep.add_argument("--sweep-report", action="store_true",
                       help="write the report of an existing study (--study-name, or the same --sweep command) and exit")
    sweep.add_argument("--pruner", choices=("median", "none"), default="median",
                       help="stop trials whose validation ROC-AUC is below the median of earlier trials at the same "
                            "epoch (median, the default) or never (none)")
    sweep.add_argument("--pruner-startup-trials", type=int, default=5,
                       help="finished trials before the pruner prunes anything (5)")
    sweep.add_argument("--pruner-warmup-epochs", type=int, default=0, help="epochs of every trial never pruned (0)")
    sweep.add_argument("--sweep-space", default=None, metavar="JSON|FILE",
                       help='change the search space: {"hop_length": [256, 512], "lr": {"low": 0.001, "high": 0.1, '
                            '"log": true}, "global_decay": null} (a list: choices; an object: a range; null: remove)')
    sweep.add_argument("--sweep-seed", type=int, default=0,
                       help="seed of the sampler (0); each trial's draws follow from it and the trial's number, so a "
                            "one-worker sweep reruns identically and concurrent workers never draw alike")
    sweep.add_argument("--heartbeat-interval", type=_positive_int, default=60,
                       help="seconds between a running trial's heartbeats (60)")
    sweep.add_argument("--grace-period", type=_positive_int, default=300,
                       help="a trial without a heartbeat for this long is failed and retried (300 s; a worker that "
                            "died on this machine is noticed at once)")
    sweep.add_argument("--max-retry", type=int, default=3, help="retries of a trial whose worker died (3)")
    sweep.add_argument("--max-failures", type=_positive_int, default=3,
                       help="this worker stops after this many failed trials in a row (3)")
    return parser


def options_from_args(args: argparse.Namespace) -> dict:
    """The flat options dict the experiment code takes, with paths made absolute."""
    from datamodules.audio import MTAT_CLIP_SAMPLES
    from datamodules.datamodule import default_cache_root

    options = {k: v for k, v in vars(args).items()
               if k not in TAGGING_OPTIONS and k not in SWEEP_OPTIONS and k != "evaluate"}
    options["cache_dir"] = str(Path(args.cache_dir).expanduser().resolve() if args.cache_dir else default_cache_root())
    options["runs_root"] = str(Path(args.runs_root).expanduser().resolve())
    if args.data != "synthetic":
        options["data"] = str(Path(args.data).expanduser().resolve())
    if args.run_dir:
        options["run_dir"] = str(Path(args.run_dir).expanduser().resolve())
    options["synthetic_clip_samples"] = args.synthetic_clip_samples or MTAT_CLIP_SAMPLES
    options["devices"] = _devices(args.devices)
    return options


def _devices(text: str):
    """--devices: 'auto', a count (-1: every GPU), or a list of GPU indices ('0,1' or '[0,1]')."""
    if text == "auto":
        return "auto"
    try:
        if text.startswith("[") or "," in text:
            devices = [int(x) for x in text.strip("[]").split(",") if x.strip()]
            if devices and min(devices) >= 0:
                return devices
        elif int(text) > 0 or int(text) == -1:
            return int(text)
    except ValueError:
        pass
    raise ConfigError(f"--devices {text}: expected auto, a positive count, -1 (every GPU) or a list of GPU indices "
                      "such as 0,1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.download:
            return _download(args.download, args.download_url, args.progress)
        if args.tag:
            return _tag(args)
        if args.checkpoint:
            parser.error("--checkpoint goes with --tag PATH...")
        if args.resume:
            return _resume(args.resume)
        if args.evaluate:
            return _evaluate(parser, args, sys.argv[1:] if argv is None else argv)
        if args.sweep or args.sweep_report:
            return _sweep(parser, args, sys.argv[1:] if argv is None else argv)
        if not args.model:
            parser.error("--model is required (or --resume RUN_DIR)")
        options = options_from_args(args)
        if args.summary:
            return _summary(options)
        return _train(options)
    except SuiteError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command (or --resume RUN_DIR) to continue from the last checkpoint",
              file=sys.stderr)
        return 130


def _one_line(error: SuiteError) -> str:
    """The error's message on one line.

    A DataLoader worker re-raises an error of its dataset as the same class with the worker's
    traceback prepended ("Caught DataError in DataLoader worker process 0. Original Traceback ...
    datamodules.errors.DataError: <message>"): keep the message, drop the traceback.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        last = next((line for line in reversed(lines) if line.startswith(prefix)), lines[-1])
        return last.removeprefix(prefix)
    return " ".join(lines)


def _train(options: dict) -> int:
    from lightning_modules.experiment import run_experiment

    _print_outcome(run_experiment(options), "run folder")
    return 0


def _print_outcome(outcome, folder: str, clips: bool = False) -> None:
    """The test line and the folder of a training run or an evaluation."""
    if outcome.metrics:
        test = outcome.metrics["test"]
        counted = f"  ({test['n_clips']} clips)" if clips else ""
        print(f"test ROC-AUC {test['roc_auc']:.4f}  PR-AUC {test['pr_auc']:.4f}  "
              f"TPR {test['tpr']:.3f}  FPR {test['fpr']:.3f}{counted}")
        print(f"{folder}: {outcome.run_dir}")


def _given_options(argv: list[str]) -> set[str]:
    """The options the command line names explicitly (a sweep keeps them fixed for all trials)."""
    probe = build_parser()
    unset = object()  # argparse fills in defaults only for attributes the namespace lacks
    namespace = argparse.Namespace(**{dest: unset for dest in vars(probe.parse_args([]))})
    return {dest for dest, value in vars(probe.parse_args(argv, namespace=namespace)).items() if value is not unset}


def _sweep(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    from sweeps.report import format_summary
    from sweeps.study import run_sweep

    if args.sweep and args.model and args.model != args.sweep:
        parser.error(f"--model {args.model} and --sweep {args.sweep} disagree; --sweep MODEL is enough")
    if args.run_dir:
        parser.error("--run-dir does not apply to a sweep: each trial gets a folder in RUNS_ROOT/sweeps/STUDY/trials")
    if args.summary:
        parser.error("--summary does not go with --sweep")
    args.model = args.sweep or args.model
    options = options_from_args(args)
    outcome = run_sweep(options, {k: getattr(args, k) for k in SWEEP_OPTIONS}, fixed=_given_options(argv))
    print(format_summary(outcome.report))
    return 0


def _tag(args: argparse.Namespace) -> int:
    from lightning_modules.tagger import run_tagging

    if not args.checkpoint:
        raise ConfigError("--tag needs --checkpoint CKPT (a .ckpt file or a run folder)")
    return run_tagging(args.tag, args.checkpoint, top_k=args.top_k, json_output=args.json, taggram=args.taggram,
                       start_s=args.start, duration_s=args.duration, accelerator=args.accelerator,
                       progress=args.progress, model=args.model)


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """--evaluate CKPT|RUN_DIR: the checkpoint's run options, overridden by the options given here, then test."""
    from lightning_modules.experiment import CONFIG_FILE, NON_IDENTITY_OPTIONS, evaluate_checkpoint, locate_checkpoint

    if args.summary or args.sweep or args.sweep_report:
        parser.error("--evaluate does not go with --summary or --sweep")
    checkpoint, source_run = locate_checkpoint(args.evaluate)
    if source_run is not None:
        given = _given_options(argv)
        saved = json.loads((source_run / CONFIG_FILE).read_text())
        for key, value in saved.items():
            if hasattr(args, key) and key not in given and key not in NON_IDENTITY_OPTIONS:
                setattr(args, key, value)
    options = options_from_args(args)
    if args.run_dir:
        run_dir = Path(args.run_dir).expanduser().resolve()
    elif source_run is not None:
        run_dir = source_run / "evaluations" / checkpoint.stem
    else:
        run_dir = checkpoint.parent / f"{checkpoint.stem}-evaluation"
    _print_outcome(evaluate_checkpoint(options, checkpoint, run_dir), "evaluation folder", clips=True)
    return 0


def _download(dest: str, base_url: str | None, progress: bool) -> int:
    from datamodules.download import MTAT_BASE_URL, download_mtat

    data_dir = download_mtat(Path(dest).expanduser().resolve(), base_url=base_url or MTAT_BASE_URL, progress=progress)
    print(f"MagnaTagATune is ready in {data_dir}: train with --data {data_dir}")
    return 0


def _resume(run_dir: str) -> int:
    from datamodules.errors import DataError
    from lightning_modules.experiment import CONFIG_FILE

    path = Path(run_dir).expanduser().resolve() / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{path}: no run configuration here; is {run_dir} a run folder?")
    options = json.loads(path.read_text())
    options.pop("resolved", None)
    options["run_dir"] = str(path.parent)
    options["resume"] = None
    return _train(options)


def _summary(options: dict) -> int:
    from lightning_modules.experiment import describe_network

    print(describe_network(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
