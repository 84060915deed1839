#!/usr/bin/env python
"""Training benchmark: per-model throughput and peak memory, and the suite's overhead over plain PyTorch.

1. Per model (sample_cnn, sample_cnn_frames, mel_cnn, lstm_mel), at the suite's (paper's) batch
   size and real input size (full 465,984-sample MTAT clips, the model's own segments), in a
   fresh subprocess each: wall time of a training step (frontend + forward + BCE + backward + SGD)
   on a real batch from the suite's loader, as segments/s and clips/s (an epoch holds
   `segments_per_clip` training segments per clip), the epoch time this implies for MTAT's
   18,706 training clips, the network's FLOPs per step (`torch.utils.flop_counter`) and the
   GFLOP/s reached, and the subprocess's peak resident memory (`getrusage` max RSS; also given:
   the RSS before the first step, i.e. the interpreter, libraries, model and batch).
2. The suite's overhead, measured in one run: the same model, data module, loader, frontend and
   network trained by a plain PyTorch loop, and by the suite's Lightning run (`run_experiment`:
   Trainer, callbacks, logger, checkpoints, validation and test). Compared: the training phase of
   each epoch (first batch fetched to last optimizer step; the first epoch is a warm-up and not
   counted), runs alternating in order. Aim: Lightning within 5% of the plain loop.

Run from the repository root:  python benchmarks/training.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from benchmarks.common import (  # noqa: E402
    MTAT_FOLDER_TRAIN_CLIPS,
    CpuClock,
    add_dataset_arguments,
    base_parser,
    benchmark_dataset,
    contention_note,
    cpu_seconds,
    fill_dataset_defaults,
    machine_busy_seconds,
    markdown_table,
    model_setup,
    network_flops_per_item,
    peak_rss_mib,
    publish,
    real_batch,
    report_header,
    start_benchmark,
    stats,
)
from lightning_modules.registry import MODELS as REGISTERED  # noqa: E402

NAME = "training"
MODELS = tuple(name for name, spec in REGISTERED.items() if spec.recipe == "paper")  # the paper's (its recipe's)
QUICK_MEL = {"mel_cnn": {"hop_length": 512, "n_mels": 96}, "lstm_mel": {"hop_length": 256, "n_mels": 64}}
RESULT_MARK = "BENCHMARK-RESULT "


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"models to measure ({', '.join(MODELS)})")
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="override every model's batch size")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per model after one warm-up (3; quick 1)")
    parser.add_argument("--overhead-model", default="mel_cnn", help="model of the overhead comparison (mel_cnn)")
    parser.add_argument("--overhead-steps", type=int, default=None, help="training batches per epoch there (6; quick 4)")
    parser.add_argument("--overhead-epochs", type=int, default=None, help="epochs per run there (4; quick 2)")
    parser.add_argument("--skip-overhead", action="store_true", help="only the per-model figures")
    parser.add_argument("--worker", default=None, help=argparse_suppress())
    args = parser.parse_args(argv)
    q = args.quick
    args.models = args.models.split(",")
    fill_dataset_defaults(args)
    args.repeats = args.repeats or (1 if q else 3)
    args.batch_size = args.batch_size or (2 if q else None)
    args.steps = args.steps or (1 if q else 3)
    args.overhead_steps = args.overhead_steps or (4 if q else 6)
    args.overhead_epochs = args.overhead_epochs or (2 if q else 4)
    return args


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- 1. per model --------------------------------------------------------------------------------------
def measure_model(name: str, data_dir: Path, cache_root: Path, clip_samples: int, quick: bool,
                  batch_size: int | None, steps: int, device, precision: str = "32", seed: int = 0,
                  warmup: int = 1) -> dict:
    """Training-step timings of one model on a real batch; memory figures for its device."""
    import torch
    import torch.nn.functional as F

    from datamodules.frontend import build_frontend
    from infrastructure.audio import INT16_SCALE
    from lightning_modules.registry import build_network

    setup = model_setup(name, clip_samples, QUICK_MEL.get(name) if quick else None, batch_size)
    waveform, target, n_tags = real_batch(data_dir, cache_root, setup, seed)
    flops = network_flops_per_item(setup, n_tags) * setup.batch_size
    torch.manual_seed(seed)
    network = build_network(setup.network_config(n_tags)).to(device)
    frontend = build_frontend(setup.frontend).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    waveform, target = waveform.to(device), target.to(device)
    autocast = precision == "bf16-mixed"
    rss_before = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, frontend_times = [], []
    with CpuClock() as clock:
        for step in range(warmup + steps):
            _sync(device)
            start = time.perf_counter()
            model_input = frontend(waveform.float() / INT16_SCALE)
            _sync(device)
            frontend_done = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.binary_cross_entropy_with_logits(network(model_input).float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _sync(device)
            if step >= warmup:
                step_times.append(time.perf_counter() - start)
                frontend_times.append(frontend_done - start)
    step = stats(step_times)
    items_per_s = setup.batch_size / step["best"]
    result = {
        "model": name, "device": str(device), "precision": precision, "batch_size": setup.batch_size,
        "segment_samples": setup.layout.segment_samples, "segments_per_clip": setup.segments_per_clip,
        "input_shape": list(setup.input_shape), "step_seconds": step, "frontend_seconds": stats(frontend_times),
        "items_per_s": items_per_s, "clips_per_s": items_per_s / setup.segments_per_clip,
        "mtat_epoch_hours": MTAT_FOLDER_TRAIN_CLIPS / (items_per_s / setup.segments_per_clip) / 3600,
        "network_flops_per_step": flops, "achieved_tflops": flops / step["best"] / 1e12,
        "parameters": sum(p.numel() for p in network.parameters()),
        "other_processes_cores": clock.others_cores,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["rss_before_steps_mib"] = rss_before
        result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_worker(spec: str) -> int:
    """Subprocess entry: measure one model on the CPU and print the result as one JSON line."""
    import torch

    options = json.loads(spec)
    result = measure_model(options["model"], Path(options["data_dir"]), Path(options["cache_root"]),
                           options["clip_samples"], options["quick"], options["batch_size"], options["steps"],
                           torch.device("cpu"), seed=options["seed"])
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


def measure_model_subprocess(name: str, args, data_dir: Path, work: Path) -> dict:
    spec = {"model": name, "data_dir": str(data_dir), "cache_root": str(work), "clip_samples": args.clip_samples,
            "quick": args.quick, "batch_size": args.batch_size, "steps": args.steps, "seed": args.seed}
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                               stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"the {name} measurement failed (exit {completed.returncode}); output:\n{completed.stdout}")
    return json.loads(lines[-1][len(RESULT_MARK):])


# ---- 2. overhead -------------------------------------------------------------------------------------
def overhead_options(model: str, data_dir: Path, work: Path, run_dir: Path, args, accelerator: str = "cpu",
                     precision: str = "32"):
    import run

    argv = ["--model", model, "--data", str(data_dir), "--cache-dir", str(work), "--run-dir", str(run_dir),
            "--max-epochs", str(args.overhead_epochs), "--limit-train-batches", str(args.overhead_steps),
            "--seed", str(args.seed), "--no-progress", "--accelerator", accelerator, "--devices", "1",
            "--precision", precision]
    if args.quick:
        for key, value in QUICK_MEL.get(model, {}).items():
            argv += ["--" + key.replace("_", "-"), str(value)]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if getattr(args, "logger", None):
        argv += ["--logger", args.logger]
    if not getattr(args, "cudnn_benchmark", True):
        argv += ["--no-cudnn-benchmark"]
    return run.parse_options(argv)


def train_phase_timer():
    """A Lightning callback timing each epoch's training phase (first batch to last optimizer step)."""
    import torch
    from lightning.pytorch.callbacks import Callback

    class TrainPhaseTimer(Callback):
        def __init__(self):
            self.epochs: list[float] = []
            self.cpu: list[float] = []
            self.machine: list[float | None] = []
            self._start = self._cpu = self._machine = None

        def on_train_epoch_start(self, trainer, pl_module):
            self._start, self._cpu, self._machine = time.perf_counter(), cpu_seconds(), machine_busy_seconds()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx + 1 == trainer.num_training_batches:
                if pl_module.device.type == "cuda":
                    torch.cuda.synchronize(pl_module.device)
                self.epochs.append(time.perf_counter() - self._start)
                self.cpu.append(cpu_seconds() - self._cpu)
                self.machine.append(_others_cores(self._machine, self.cpu[-1], self.epochs[-1]))

    return TrainPhaseTimer()


def _others_cores(machine_start: float | None, own_cpu: float, wall: float) -> float | None:
    """Cores other processes (loader workers included) kept busy over an interval; see `CpuClock`."""
    machine = machine_busy_seconds()
    if machine is None or machine_start is None or wall <= 0:
        return None
    return max(0.0, machine - machine_start - own_cpu) / wall


def lightning_epochs(options) -> tuple[list[float], list[float], list, float]:
    """The suite's run, per epoch's training phase: wall seconds, main-process CPU seconds, cores busy
    with other processes; and the whole run's wall seconds."""
    from experiments.train import run_experiment

    timer = train_phase_timer()
    start = time.perf_counter()
    run_experiment(options, extra_callbacks=(timer,))
    return timer.epochs, timer.cpu, timer.machine, time.perf_counter() - start


def plain_epochs(options, device) -> tuple[list[float], list[float], list]:
    """The same data module, frontend and network trained by a plain PyTorch loop (SGD, BCE)."""
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F

    from experiments.data import prepare_data_once
    from experiments.resolve import build_datamodule, build_module, resolve

    run = resolve(options)
    pl.seed_everything(options.seed, workers=True, verbose=False)
    datamodule = build_datamodule(run)
    module = build_module(run.with_data(prepare_data_once(datamodule)))
    datamodule.setup("fit")
    network = module.network.to(device)
    network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=options.lr, momentum=options.momentum)
    loader = datamodule.train_dataloader()
    steps = min(options.limit_train_batches, len(loader))
    autocast = options.precision == "bf16-mixed"
    epochs, cpu, machine = [], [], []
    for epoch in range(options.max_epochs):
        loader.sampler.set_epoch(epoch)
        start, cpu_start, machine_start = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
        for index, batch in enumerate(loader):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            batch = datamodule.on_after_batch_transfer(batch, 0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = network(batch["input"])
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch["target"].float())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if index + 1 == steps:
                break
        _sync(device)
        epochs.append(time.perf_counter() - start)
        cpu.append(cpu_seconds() - cpu_start)
        machine.append(_others_cores(machine_start, cpu[-1], epochs[-1]))
    return epochs, cpu, machine


def measure_overhead(args, data_dir: Path, work: Path, device, accelerator: str = "cpu",
                     precision: str = "32") -> dict:
    runs_dir = work / f"overhead-runs-{accelerator}"
    shutil.rmtree(runs_dir, ignore_errors=True)
    wall = {"plain": [], "lightning": []}
    cpu = {"plain": [], "lightning": []}
    others = {"plain": [], "lightning": []}
    fit_seconds, logger = [], None
    for repeat in range(args.repeats):
        order = ("plain", "lightning") if repeat % 2 == 0 else ("lightning", "plain")
        for kind in order:
            options = overhead_options(args.overhead_model, data_dir, work, runs_dir / f"{kind}-{repeat}", args,
                                       accelerator, precision)
            logger = options.logger
            if kind == "plain":
                epochs, cpu_epochs, other_epochs = plain_epochs(options, device)
            else:
                epochs, cpu_epochs, other_epochs, total = lightning_epochs(options)
                fit_seconds.append(total)
            wall[kind] += epochs[1:]
            cpu[kind] += cpu_epochs[1:]
            others[kind] += other_epochs[1:]
            print(f"  overhead repeat {repeat}: {kind:9s} epochs {', '.join(f'{e:.2f}' for e in epochs)} s "
                  f"(CPU {', '.join(f'{c:.2f}' for c in cpu_epochs)} s)", flush=True)
    shutil.rmtree(runs_dir, ignore_errors=True)
    p, lit = stats(wall["plain"]), stats(wall["lightning"])
    pc, lc = stats(cpu["plain"]), stats(cpu["lightning"])
    return {"model": args.overhead_model, "steps_per_epoch": args.overhead_steps, "epochs_per_run": args.overhead_epochs,
            "runs_each": args.repeats, "precision": precision, "logger": logger,
            "plain_epoch_seconds": p, "lightning_epoch_seconds": lit,
            "plain_epoch_cpu_seconds": pc, "lightning_epoch_cpu_seconds": lc,
            "plain_epoch_other_cores": others["plain"], "lightning_epoch_other_cores": others["lightning"],
            "lightning_run_total_seconds": stats(fit_seconds),
            "ratio_lightning_vs_plain": lit["best"] / p["best"],
            "ratio_lightning_vs_plain_median": lit["median"] / p["median"],
            "ratio_lightning_vs_plain_cpu": lc["best"] / pc["best"]}


# ---- report ------------------------------------------------------------------------------------------------
def model_rows(models: list[dict], memory_key: str) -> list[list]:
    rows = []
    for r in models:
        memory = r.get(memory_key)
        extra = [r["rss_before_steps_mib"]] if memory_key == "peak_rss_mib" else []
        rows.append([r["model"], r["batch_size"], f"{r['segment_samples']:,} x {r['segments_per_clip']}",
                     r["step_seconds"]["best"], r["items_per_s"], r["clips_per_s"], r["mtat_epoch_hours"],
                     r["network_flops_per_step"] / 1e9, r["achieved_tflops"] * 1000, memory, *extra,
                     r.get("other_processes_cores")])
    return rows


MODEL_HEADERS = ["model", "batch", "segment samples x per clip", "step s", "segments/s", "clips/s",
                 "MTAT epoch h", "network GFLOP/step", "GFLOP/s"]


def _median(values: list) -> float | None:
    import statistics

    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def build_report(args, info, models, overhead, command) -> tuple[dict, str]:
    ratios = {}
    if models:
        fastest = max(models, key=lambda r: r["clips_per_s"])
        ratios["clips_per_s_vs_fastest"] = {r["model"]: r["clips_per_s"] / fastest["clips_per_s"] for r in models}
    if overhead:
        ratios["lightning_vs_plain"] = overhead["ratio_lightning_vs_plain"]
        ratios["lightning_vs_plain_median"] = overhead["ratio_lightning_vs_plain_median"]
        ratios["lightning_vs_plain_cpu"] = overhead["ratio_lightning_vs_plain_cpu"]
    targets = {"lightning_vs_plain <= 1.05": overhead["ratio_lightning_vs_plain"] <= 1.05} if overhead else {}
    payload = {"benchmark": NAME, "quick": args.quick, "device": "cpu", "machine": info,
               "settings": {"clip_samples": args.clip_samples, "steps": args.steps, "repeats": args.repeats,
                            "batch_size_override": args.batch_size},
               "ratios": ratios, "targets_met": targets, "models": models, "overhead": overhead}
    md = [report_header("Training benchmark (CPU)", info, args.quick, command),
          f"Real batches from the suite's loader (synthetic MTAT clips of {args.clip_samples:,} samples), fp32. Step = "
          "frontend + forward + BCE + backward + SGD; best of the measured steps after one warm-up step. Each model "
          "runs in a fresh subprocess; peak memory is its max RSS. MTAT epoch = 18,706 training clips (folder split).\n"]
    if models:
        md += ["## Per model\n",
               markdown_table(MODEL_HEADERS + ["peak RSS MiB", "RSS before steps MiB", "cores busy with other processes"],
                              model_rows(models, "peak_rss_mib")),
               "\nclips/s relative to the fastest model: "
               + ", ".join(f"{k} {v:.3f}" for k, v in ratios["clips_per_s_vs_fastest"].items())]
    if overhead:
        o = overhead
        md += ["\n## Suite overhead: Lightning run vs plain PyTorch loop\n",
               f"{o['model']}, {o['steps_per_epoch']} batches per epoch, {o['epochs_per_run']} epochs per run (first not "
               f"counted), {o['runs_each']} run(s) each, alternating; the suite run with its default logger "
               f"({o['logger']}), callbacks, checkpoints, validation and test; timed: each epoch's training phase.\n",
               markdown_table(["", "best epoch s", "median epoch s", "best epoch CPU s (main process)",
                               "cores busy with other processes (median)", "epochs counted"], [
                   ["plain PyTorch loop", o["plain_epoch_seconds"]["best"], o["plain_epoch_seconds"]["median"],
                    o["plain_epoch_cpu_seconds"]["best"], _median(o["plain_epoch_other_cores"]),
                    len(o["plain_epoch_seconds"]["values"])],
                   ["suite (Lightning run_experiment)", o["lightning_epoch_seconds"]["best"],
                    o["lightning_epoch_seconds"]["median"], o["lightning_epoch_cpu_seconds"]["best"],
                    _median(o["lightning_epoch_other_cores"]), len(o["lightning_epoch_seconds"]["values"])]]),
               "\n(Other processes include the loader's worker; the rest is other work on the machine.)",
               f"\nRatio Lightning / plain: {o['ratio_lightning_vs_plain']:.3f} (best epochs), "
               f"{o['ratio_lightning_vs_plain_median']:.3f} (median epochs), {o['ratio_lightning_vs_plain_cpu']:.3f} "
               f"(CPU time); aim <= 1.05: {'met' if targets['lightning_vs_plain <= 1.05'] else 'NOT met'}."]
    md.append("\n" + contention_note(info))
    return payload, "\n".join(md)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    work, out, info, command = start_benchmark(NAME, args, argv)
    print(f"training benchmark (CPU): work dir {work}", flush=True)
    data_dir = benchmark_dataset(work, args.distinct_clips, args.rows, args.clip_samples, args.seed,
                                 progress=not args.quick)
    models = []
    for name in args.models:
        setup = model_setup(name, args.clip_samples, QUICK_MEL.get(name) if args.quick else None, args.batch_size)
        real_batch(data_dir, work, setup, args.seed)  # prepares the cache once, outside the measured subprocess
        result = measure_model_subprocess(name, args, data_dir, work)
        print(f"  {name}: step {result['step_seconds']['best']:.2f} s, {result['clips_per_s']:.2f} clips/s, "
              f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
        models.append(result)
    overhead = None if args.skip_overhead else measure_overhead(args, data_dir, work, torch.device("cpu"))
    payload, markdown = build_report(args, info, models, overhead, command)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
