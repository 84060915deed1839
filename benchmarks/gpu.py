#!/usr/bin/env python
"""GPU benchmark: bf16 against fp32, the Mel frontend, the suite's overhead, an MTAT-sized epoch, MFU.

Runs when a CUDA GPU is available; otherwise it says so, writes a result file marked
``"skipped": true`` and exits 0. Measured in one run on the GPU:

1. Per model, at the suite's batch sizes on full 465,984-sample clips (real batches from the
   suite's loader), in fp32 and in bf16 autocast (the Mel frontend stays fp32): step time,
   segments/s and clips/s, peak GPU memory (`torch.cuda.max_memory_allocated`), the frontend's
   share of the step, and model FLOP utilization (MFU: network forward + backward FLOPs counted by
   `torch.utils.flop_counter`, per second, over the GPU's dense peak for the precision: bf16
   tensor cores for bf16; for fp32 the TF32 tensor-core peak when cuDNN may use TF32 (PyTorch's
   default for convolutions), else the plain FP32 peak). Ratios: bf16 / fp32 speed and memory.
2. The Mel frontend on the GPU, nnAudio against torchaudio, and its share of a step.
3. The suite's overhead on the GPU: plain PyTorch loop against the Lightning run (bf16).
4. An epoch of MTAT-sized synthetic data: an MTAT-layout dataset of 25,863 rows (the generated
   clips linked repeatedly, see `benchmarks/common.py`), prepared into the waveform cache with all
   cores (timed), then one epoch of `--epoch-model` through the suite (`run_experiment`: training
   on the 18,7xx training rows of the folder split, validation, test), with the training phase timed.

Run from the repository root:  python benchmarks/gpu.py [--quick]
`--allow-cpu` runs the same code on the CPU (for testing the script; those are not GPU figures).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from benchmarks.common import (  # noqa: E402
    MTAT_ROWS,
    add_dataset_arguments,
    base_parser,
    benchmark_dataset,
    data_module,
    fill_dataset_defaults,
    markdown_table,
    model_setup,
    publish,
    report_header,
    start_benchmark,
    usable_cores,
    write_outputs,
)
from lightning_modules.registry import MODELS as REGISTERED  # noqa: E402

NAME = "gpu"
MODELS = tuple(REGISTERED)  # every registered model
PRECISIONS = ("32", "bf16-mixed")

# Dense (no sparsity) peak TFLOP/s from the vendor's data sheets: (bf16 tensor, tf32 tensor, fp32).
PEAK_TFLOPS = (
    ("H200", (989.4, 494.7, 66.9)),
    ("H100 PCIe", (756.5, 378.0, 51.2)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", (312.0, 156.0, 19.5)),
)


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="models to measure (every registered model; quick mel_cnn)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per model and precision (10; quick 1)")
    add_dataset_arguments(parser, rows=None)
    parser.add_argument("--epoch-rows", type=int, default=None, help=f"rows of the epoch's dataset ({MTAT_ROWS:,}; quick 48)")
    parser.add_argument("--epoch-model", default="mel_cnn", help="model of the MTAT-sized epoch (mel_cnn)")
    parser.add_argument("--epoch-precision", default="bf16-mixed", choices=PRECISIONS, help="its precision (bf16-mixed)")
    parser.add_argument("--overhead-steps", type=int, default=None, help="batches per epoch in the overhead runs (100; quick 4)")
    parser.add_argument("--overhead-epochs", type=int, default=None, help="epochs per overhead run (3; quick 2)")
    parser.add_argument("--skip-epoch", action="store_true", help="skip the MTAT-sized epoch")
    parser.add_argument("--skip-overhead", action="store_true", help="skip the overhead comparison")
    parser.add_argument("--peak-tflops-bf16", type=float, default=None, help="override the GPU's dense bf16 peak")
    parser.add_argument("--peak-tflops-fp32", type=float, default=None,
                        help="override the peak used for fp32 runs (TF32 tensor peak when cuDNN TF32 is on)")
    parser.add_argument("--logger", choices=("wandb", "csv", "tensorboard", "none"), default=None,
                        help="logger of the suite's runs (epoch, overhead): the suite's default unless given")
    parser.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                        help="cuDNN autotuning in every measurement (the suite's default: on)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="without a GPU, run the same code on the CPU (tests the script; not GPU figures)")
    args = parser.parse_args(argv)
    q = args.quick
    args.models = (args.models if args.models != ",".join(MODELS) or not q else "mel_cnn").split(",")
    args.steps = args.steps or (1 if q else 10)
    fill_dataset_defaults(args)
    args.epoch_rows = args.epoch_rows or (48 if q else MTAT_ROWS)
    args.overhead_steps = args.overhead_steps or (4 if q else 100)
    args.overhead_epochs = args.overhead_epochs or (2 if q else 3)
    args.repeats = args.repeats or (1 if q else 3)
    return args


def peak_tflops(args, device) -> dict:
    """The dense peaks used for MFU: {'bf16-mixed': x, '32': y, 'fp32_basis': ...} (None when unknown)."""
    import torch

    tf32 = bool(torch.backends.cudnn.allow_tf32)
    found = (None, None, None)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, values in PEAK_TFLOPS:
            if key in name:
                found = values
                break
    bf16 = args.peak_tflops_bf16 or found[0]
    fp32 = args.peak_tflops_fp32 or (found[1] if tf32 else found[2])
    basis = "given" if args.peak_tflops_fp32 else ("TF32 tensor cores (cuDNN allow_tf32)" if tf32 else "FP32")
    return {"bf16-mixed": bf16, "32": fp32, "fp32_basis": basis}


def model_rows(args) -> int:
    """Rows of the dataset the per-model and frontend figures read batches from (48 in quick mode,
    so that the folder split has validation and test clips)."""
    return max(args.distinct_clips, 48) if args.quick else args.distinct_clips


def measure_models(args, work: Path, device, peaks: dict) -> list[dict]:
    from benchmarks.training import measure_model

    data_dir = benchmark_dataset(work, args.distinct_clips, model_rows(args), args.clip_samples, args.seed,
                                 progress=not args.quick)
    results = []
    for name in args.models:
        for precision in PRECISIONS:
            r = measure_model(name, data_dir, work, args.clip_samples, args.quick, 2 if args.quick else None,
                              args.steps, device, precision, args.seed, warmup=2)
            r["frontend_share"] = r["frontend_seconds"]["best"] / r["step_seconds"]["best"]
            peak = peaks.get(precision)
            r["peak_tflops"] = peak
            r["mfu"] = r["achieved_tflops"] / peak if peak else None
            print(f"  {name} {precision}: step {r['step_seconds']['best'] * 1000:.1f} ms, {r['clips_per_s']:.1f} clips/s, "
                  f"{r['achieved_tflops']:.1f} TFLOP/s", flush=True)
            results.append(r)
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
    return results


def measure_frontend(args, work: Path, device) -> list[dict]:
    from benchmarks import frontend

    fargs = SimpleNamespace(models=[m for m in ("mel_cnn", "lstm_mel") if m in args.models] or ["mel_cnn"],
                            distinct_clips=args.distinct_clips, rows=model_rows(args), clip_samples=args.clip_samples,
                            seed=args.seed, repeats=max(3, args.repeats) if not args.quick else 1, quick=args.quick,
                            batch_size=2 if args.quick else None)
    return frontend.run(fargs, work, device)


def measure_overhead(args, work: Path, data_dir: Path, device) -> dict:
    from benchmarks import training

    targs = SimpleNamespace(overhead_model=args.epoch_model, overhead_steps=args.overhead_steps,
                            overhead_epochs=args.overhead_epochs, repeats=2 if not args.quick else 1, seed=args.seed,
                            quick=args.quick, batch_size=2 if args.quick else None, logger=args.logger,
                            cudnn_benchmark=args.cudnn_benchmark)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    return training.measure_overhead(targs, data_dir, work, device, accelerator, "bf16-mixed")


def measure_epoch(args, work: Path, data_dir: Path, device) -> dict:
    """Prepare the MTAT-sized cache (timed), then one epoch of the suite's run with the training phase timed."""
    from benchmarks import training

    setup = model_setup(args.epoch_model, args.clip_samples,
                        training.QUICK_MEL.get(args.epoch_model) if args.quick else None)
    from infrastructure.errors import DataError

    dm = data_module(data_dir, work, setup)
    try:
        dm.open_prepared()
        prepared_before = True
    except DataError:
        prepared_before = False
    start = time.perf_counter()
    dm.prepare_data()
    prepare_seconds = None if prepared_before else time.perf_counter() - start
    dm.setup("fit")
    train_clips = len(dm.dataset("train").rows)
    targs = SimpleNamespace(overhead_epochs=1, overhead_steps=10**9, seed=args.seed, quick=args.quick,
                            batch_size=2 if args.quick else None, logger=args.logger,
                            cudnn_benchmark=args.cudnn_benchmark)
    run_dir = work / "gpu-epoch-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    options = training.overhead_options(args.epoch_model, data_dir, work, run_dir, targs, accelerator,
                                        args.epoch_precision)
    options = options.replace(limit_train_batches=None)
    epochs, _, _, total = training.lightning_epochs(options)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"rows": args.epoch_rows, "train_clips": train_clips, "model": args.epoch_model,
            "precision": args.epoch_precision, "logger": options.logger, "prepare_seconds": prepare_seconds,
            "prepare_clips_per_s": args.epoch_rows / prepare_seconds if prepare_seconds else None,
            "prepare_workers": usable_cores(),
            "train_epoch_seconds": epochs[0], "train_clips_per_s": train_clips / epochs[0],
            "run_total_seconds": total}


def build_report(args, info, device, peaks, models, frontends, overhead, epoch, command) -> tuple[dict, str]:
    by_key = {(r["model"], r["precision"]): r for r in models}
    ratios = {"bf16_vs_fp32_speed": {}, "bf16_vs_fp32_memory": {}}
    for name in args.models:
        fp32, bf16 = by_key.get((name, "32")), by_key.get((name, "bf16-mixed"))
        if fp32 and bf16:
            ratios["bf16_vs_fp32_speed"][name] = bf16["items_per_s"] / fp32["items_per_s"]
            memory_key = "peak_gpu_memory_mib" if "peak_gpu_memory_mib" in bf16 else "peak_rss_mib"
            ratios["bf16_vs_fp32_memory"][name] = bf16[memory_key] / fp32[memory_key]
    ratios["mfu"] = {f"{r['model']}/{r['precision']}": r["mfu"] for r in models}
    ratios["frontend_nnaudio_vs_torchaudio"] = {r["model"]: r["ratio_nnaudio_vs_torchaudio"] for r in frontends}
    if overhead:
        ratios["lightning_vs_plain"] = overhead["ratio_lightning_vs_plain"]
    payload = {"benchmark": NAME, "skipped": False, "quick": args.quick, "device": str(device), "machine": info,
               "cudnn_benchmark": args.cudnn_benchmark,
               "peak_tflops": peaks, "ratios": ratios, "models": models, "frontend": frontends,
               "overhead": overhead, "epoch": epoch}
    label = info.get("gpu") or "CPU (--allow-cpu: not GPU figures)"
    memory_key = "peak_gpu_memory_mib" if device.type == "cuda" else "peak_rss_mib"
    rows = [[r["model"], r["precision"], r["batch_size"], r["step_seconds"]["best"] * 1000, r["items_per_s"],
             r["clips_per_s"], r["mtat_epoch_hours"] * 60, r.get(memory_key), f"{r['frontend_share']:.0%}",
             r["achieved_tflops"], f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"] for r in models]
    md = [report_header(f"GPU benchmark: {label}", info, args.quick, command),
          f"MFU peaks (dense TFLOP/s): bf16 {peaks['bf16-mixed']}, fp32 runs {peaks['32']} ({peaks['fp32_basis']}). "
          f"cuDNN autotuning (torch.backends.cudnn.benchmark): {'on' if args.cudnn_benchmark else 'off'}.\n",
          "## Ratios: bf16 autocast vs fp32\n",
          markdown_table(["model", "bf16 / fp32 speed", "bf16 / fp32 peak memory"],
                         [[m, ratios["bf16_vs_fp32_speed"].get(m), ratios["bf16_vs_fp32_memory"].get(m)]
                          for m in args.models]),
          "\n## Per model and precision\n",
          markdown_table(["model", "precision", "batch", "step ms", "segments/s", "clips/s", "MTAT epoch min",
                          "peak memory MiB", "frontend share", "network TFLOP/s", "MFU"], rows)]
    if frontends:
        md += ["\n## Mel frontend: nnAudio vs torchaudio\n",
               markdown_table(["model", "nnAudio ms", "torchaudio ms", "nnAudio / torchaudio", "share (nnAudio)",
                               "share (torchaudio)"],
                              [[r["model"], r["seconds"]["nnaudio"]["best"] * 1000, r["seconds"]["torchaudio"]["best"] * 1000,
                                r["ratio_nnaudio_vs_torchaudio"], f"{r['share_nnaudio']:.0%}", f"{r['share_torchaudio']:.0%}"]
                               for r in frontends])]
    if overhead:
        md += ["\n## Suite overhead (bf16): Lightning run vs plain PyTorch loop\n",
               f"{overhead['model']}, {overhead['steps_per_epoch']} batches per epoch; best epoch: plain "
               f"{overhead['plain_epoch_seconds']['best']:.2f} s, Lightning {overhead['lightning_epoch_seconds']['best']:.2f} s; "
               f"ratio {overhead['ratio_lightning_vs_plain']:.3f} (median {overhead['ratio_lightning_vs_plain_median']:.3f})."]
    if epoch:
        md += ["\n## An epoch of MTAT-sized synthetic data\n",
               "Prepare: decoding the dataset's MP3s into the waveform cache with all cores (n/a: the cache was "
               "already there from an earlier run).\n",
               markdown_table(["rows", "train clips", "model", "precision", "logger", "prepare s", "prepare clips/s",
                               "train epoch s", "train clips/s", "whole run s (incl. validation, test)"],
                              [[epoch["rows"], epoch["train_clips"], epoch["model"], epoch["precision"], epoch["logger"],
                                epoch["prepare_seconds"], epoch["prepare_clips_per_s"], epoch["train_epoch_seconds"],
                                epoch["train_clips_per_s"], epoch["run_total_seconds"]]])]
    return payload, "\n".join(md)


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    work, out, info, command = start_benchmark(NAME, args, argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        reason = "no CUDA GPU available (torch.cuda.is_available() is False)"
        print(f"GPU benchmark SKIPPED: {reason}. Nothing was measured.")
        payload = {"benchmark": NAME, "skipped": True, "reason": reason, "quick": args.quick, "machine": info,
                   "ratios": {}}
        markdown = report_header("GPU benchmark", info, args.quick, command) + f"\n**Skipped: {reason}.**\n"
        json_path, md_path = write_outputs(out, NAME, payload, markdown, args.quick)
        print(f"wrote {json_path} and {md_path}")
        return 0
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    print(f"GPU benchmark on {info.get('gpu') or 'the CPU (--allow-cpu)'}: work dir {work}", flush=True)
    peaks = peak_tflops(args, device)
    models = measure_models(args, work, device, peaks)
    frontends = measure_frontend(args, work, device)
    epoch_data = None
    if not (args.skip_epoch and args.skip_overhead):
        epoch_data = benchmark_dataset(work, args.distinct_clips, args.epoch_rows, args.clip_samples, args.seed,
                                       progress=not args.quick)
    epoch = None if args.skip_epoch else measure_epoch(args, work, epoch_data, device)
    overhead = None if args.skip_overhead else measure_overhead(args, work, epoch_data, device)
    payload, markdown = build_report(args, info, device, peaks, models, frontends, overhead, epoch, command)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
