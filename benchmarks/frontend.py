#!/usr/bin/env python
"""Mel frontend benchmark: nnAudio against torchaudio, and the frontend's share of a training step.

For each Mel model at the paper's settings (mel_cnn: n_fft 2048, hop 1792, 128 Mel bands on one
465,920-sample segment per clip; lstm_mel: n_fft 2048, hop 512, 128 bands on 115,712-sample
segments) and its batch size, on a real batch from the suite's loader (int16 waveforms from the
cache), measured in one run, interleaved:

* the frontend as the suite runs it in `on_after_batch_transfer` (int16 -> float, `LogMel` in
  fp32 with the dB compression), backed by nnAudio and by torchaudio;
* the rest of the training step (network forward, BCE loss, backward, SGD step);

and reported as the time ratio nnAudio / torchaudio, the frontend's share of the whole step with
each backend, and the step speed-up torchaudio would give. The two backends' outputs are compared
too (largest difference in dB over the bins within 60 dB of the batch's peak).

Run from the repository root:  python benchmarks/frontend.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import time  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CpuClock,
    add_dataset_arguments,
    base_parser,
    benchmark_dataset,
    contention_note,
    fill_dataset_defaults,
    markdown_table,
    model_setup,
    publish,
    real_batch,
    report_header,
    start_benchmark,
    stats,
)
from lightning_modules.registry import MODELS as REGISTERED  # noqa: E402

NAME = "frontend"
MODELS = tuple(name for name, spec in REGISTERED.items() if spec.recipe == "paper" and spec.frontend is not None)
QUICK_MEL = {"mel_cnn": {"hop_length": 512, "n_mels": 96}, "lstm_mel": {"hop_length": 256, "n_mels": 64}}


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"Mel models to measure ({','.join(MODELS)})")
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=None, help="override the models' batch sizes (32)")
    args = parser.parse_args(argv)
    q = args.quick
    args.models = args.models.split(",")
    fill_dataset_defaults(args)
    args.repeats = args.repeats or (2 if q else 5)
    args.batch_size = args.batch_size or (2 if q else None)
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def measure_setting(name: str, setups: dict, waveform, target, n_tags: int, repeats: int, device,
                    precision: str = "32") -> dict:
    """Frontend (per backend) and network-step timings for one model; see the module docstring."""
    import torch
    import torch.nn.functional as F

    from datamodules.frontend import build_frontend
    from infrastructure.audio import INT16_SCALE
    from lightning_modules.registry import build_network

    torch.manual_seed(0)
    frontends = {backend: build_frontend(s.frontend).to(device) for backend, s in setups.items()}
    setup = next(iter(setups.values()))
    network = build_network(setup.network_config(n_tags)).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    waveform, target = waveform.to(device), target.to(device)
    autocast = precision == "bf16-mixed"

    def frontend(backend):
        return frontends[backend](waveform.float() / INT16_SCALE)

    def network_step(model_input):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.binary_cross_entropy_with_logits(network(model_input).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times = {backend: [] for backend in frontends}
    times["network"] = []
    outputs = {}
    with CpuClock() as clock:
        for round_ in range(repeats + 1):  # round 0 warms up (allocations, kernel choice)
            for backend in frontends:
                outputs[backend], seconds = _timed(lambda: frontend(backend), device)
                if round_:
                    times[backend].append(seconds)
            _, seconds = _timed(lambda: network_step(outputs["torchaudio"]), device)
            if round_:
                times["network"].append(seconds)
    a, b = outputs["nnaudio"].float(), outputs["torchaudio"].float()
    loud = b > (b.amax() - 60.0)
    max_db_diff = float((a - b).abs()[loud].max())
    result = {"model": name, "batch_size": len(waveform), "segment_samples": waveform.shape[1],
              "mel": setup.frontend.to_dict(), "output_shape": list(b.shape[1:]), "max_db_difference": max_db_diff,
              "other_processes_cores": clock.others_cores}
    result["seconds"] = {k: stats(v) for k, v in times.items()}
    net = result["seconds"]["network"]["best"]
    nn_t, ta_t = result["seconds"]["nnaudio"]["best"], result["seconds"]["torchaudio"]["best"]
    result["ratio_nnaudio_vs_torchaudio"] = nn_t / ta_t
    result["share_nnaudio"] = nn_t / (nn_t + net)
    result["share_torchaudio"] = ta_t / (ta_t + net)
    result["step_speedup_with_torchaudio"] = (nn_t + net) / (ta_t + net)
    return result


def model_setups(name: str, clip_samples: int, quick: bool, batch_size: int | None) -> dict:
    overrides = QUICK_MEL.get(name) if quick else None
    return {backend: model_setup(name, clip_samples, overrides, batch_size, backend=backend)
            for backend in ("nnaudio", "torchaudio")}


def build_report(args, info, results, command, device_label: str = "CPU") -> tuple[dict, str]:
    ratios = {r["model"]: {"nnaudio_vs_torchaudio": r["ratio_nnaudio_vs_torchaudio"],
                           "frontend_share_nnaudio": r["share_nnaudio"],
                           "frontend_share_torchaudio": r["share_torchaudio"],
                           "step_speedup_with_torchaudio": r["step_speedup_with_torchaudio"]} for r in results}
    payload = {"benchmark": NAME, "quick": args.quick, "device": device_label, "machine": info,
               "settings": {"clip_samples": args.clip_samples, "repeats": args.repeats, "models": args.models},
               "ratios": ratios, "results": results}
    ratio_rows, abs_rows = [], []
    for r in results:
        m = r["mel"]
        setting = (f"{r['model']}: n_fft {m['n_fft']}, hop {m['hop_length']}, {m['n_mels']} Mel, "
                   f"batch {r['batch_size']} x {r['segment_samples']:,}")
        ratio_rows.append([setting, r["ratio_nnaudio_vs_torchaudio"], f"{r['share_nnaudio']:.0%}",
                           f"{r['share_torchaudio']:.0%}", r["step_speedup_with_torchaudio"]])
        s = r["seconds"]
        ms = {k: {q: v[q] * 1000 for q in ("best", "median")} for k, v in s.items()}
        abs_rows.append([r["model"], ms["nnaudio"]["best"], ms["torchaudio"]["best"], ms["network"]["best"],
                         ms["nnaudio"]["median"], ms["torchaudio"]["median"], ms["network"]["median"],
                         f"{r['max_db_difference']:.1e}", r["other_processes_cores"]])
    md = [report_header(f"Mel frontend benchmark ({device_label})", info, args.quick, command),
          f"Real batches from the suite's loader (synthetic MTAT clips of {args.clip_samples:,} samples); frontend = "
          f"int16 -> float + LogMel (fp32, dB); network step = forward + BCE + backward + SGD. Best of {args.repeats} "
          "interleaved repeats.\n",
          "## Ratios\n",
          markdown_table(["setting", "nnAudio / torchaudio time", "frontend share of step (nnAudio)",
                          "frontend share (torchaudio)", "step speed-up with torchaudio"], ratio_rows),
          "\n## Milliseconds per batch\n",
          markdown_table(["model", "nnAudio best", "torchaudio best", "network step best", "nnAudio median",
                          "torchaudio median", "network median", "max dB diff",
                          "cores busy with other processes"], abs_rows),
          "\n" + contention_note(info)]
    return payload, "\n".join(md)


def run(args, work: Path, device, precision: str = "32") -> list[dict]:
    data_dir = benchmark_dataset(work, args.distinct_clips, args.rows, args.clip_samples, args.seed,
                                 progress=not args.quick)
    results = []
    for name in args.models:
        setups = model_setups(name, args.clip_samples, args.quick, args.batch_size)
        waveform, target, n_tags = real_batch(data_dir, work, setups["nnaudio"], args.seed)
        result = measure_setting(name, setups, waveform, target, n_tags, args.repeats, device, precision)
        print(f"  {name}: nnAudio {result['seconds']['nnaudio']['best']:.3f} s, torchaudio "
              f"{result['seconds']['torchaudio']['best']:.3f} s, network step {result['seconds']['network']['best']:.3f} s",
              flush=True)
        results.append(result)
    return results


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    work, out, info, command = start_benchmark(NAME, args, argv)
    print(f"frontend benchmark (CPU): work dir {work}", flush=True)
    results = run(args, work, torch.device("cpu"))
    payload, markdown = build_report(args, info, results, command)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
