#!/usr/bin/env python
"""Catalogue tagging benchmark: `run.py --tag DIR --out tags.csv` on a folder of generated 30 s MP3s.

Measured in one run, per model (default mel_cnn, short_chunk_cnn, lstm_mel at their full, paper /
publication sizes; untrained weights, which cost what trained ones cost):

* catalogue: the whole command in a subprocess, as a user runs it (`--prepare-workers` default: all
  cores; segments batched on the device): files/s as the job reports it (decoding and inference,
  without the interpreter's start and the model's loading), the real-time factor (processing seconds
  per second of audio) and the peak memory of the job (its process and its decoding workers, summed,
  sampled from /proc every 50 ms);
* D, decoding alone: the catalogue's worker task (plan, read, cut into segments) over every file,
  in a pool of as many workers, no network;
* N, the network alone: the frontend and network on the files' decoded segments, in this process,
  batched as the catalogue batches them.

On a CPU decoding and the network share the cores, so the catalogue's bound is D·N/(D+N) (each
file costs 1/D + 1/N core-seconds-worth of the machine); on a GPU they overlap, and the bound is
min(D, N). The goal: the catalogue reaches at least 0.8 of its bound.

Run from the repository root:  python benchmarks/tagging.py [--quick] [--device cuda]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    base_parser,
    contention_note,
    markdown_table,
    model_setup,
    publish,
    report_header,
    start_benchmark,
    synthetic_dataset,
    usable_cores,
)
from tagging.catalogue import default_workers  # noqa: E402

NAME = "tagging"
SECONDS = 30
GOAL = 0.8


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--files", type=int, default=None, help="generated 30 s MP3s (default 64, quick 4)")
    parser.add_argument("--models", default=None, help="comma-separated (default mel_cnn,short_chunk_cnn,lstm_mel; "
                                                       "quick mel_cnn)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16, help="segments per forward pass")
    args = parser.parse_args(argv)
    args.files = args.files or (4 if args.quick else 64)
    args.models = (args.models or ("mel_cnn" if args.quick else "mel_cnn,short_chunk_cnn,lstm_mel")).split(",")
    return args


def exported_model(name: str, folder: Path, device: str):
    """An untrained full-size `name` as an exported folder (what --checkpoint takes) and its Tagger."""
    import torch

    from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
    from lightning_modules.registry import build_network
    from tagging.export import export_model
    from tagging.tagger import Tagger

    setup = model_setup(name, MTAT_CLIP_SAMPLES)
    torch.manual_seed(0)
    n_tags = 50
    config = {"network": setup.network_config(n_tags), "tags": [f"tag{i}" for i in range(n_tags)],
              "thresholds": [0.5] * n_tags, "threshold_fell_back": [False] * n_tags,
              "frontend": setup.frontend.to_dict() if setup.frontend is not None else None,
              "layout": setup.layout.to_dict(), "sample_rate": SAMPLE_RATE}
    tagger = Tagger(build_network(config["network"]), config, device=device)
    export_model(tagger, folder, command=["(benchmarks/tagging.py)"])
    return tagger


def decode_rate(files: list[Path], tagger, workers: int) -> tuple[float, list]:
    """(files/s of the catalogue's decoding task alone over `files`, the decoded segments per file)."""
    from infrastructure.workers import WorkerPool
    from tagging.catalogue import decode_piece

    start = time.perf_counter()
    decoded = []
    with WorkerPool(workers) as pool:
        arguments = ((str(f), tagger.sample_rate, tagger.segment_samples, 0.0, None, 0, None) for f in files)
        for outcome in pool.imap(decode_piece, arguments, ordered=True, window=2 * workers):
            assert outcome[0] == "ok" and len(outcome[1].pieces) == 1, outcome[:3]
            decoded.append(outcome[4])
    return len(files) / (time.perf_counter() - start), decoded


def network_rate(tagger, decoded: list) -> float:
    """Files/s of the frontend and network alone on decoded segments, batched as the catalogue batches them."""
    import numpy as np

    segments = np.concatenate(decoded)
    tagger.infer(segments[:tagger.batch_size])  # warm-up
    start = time.perf_counter()
    tagger.infer(segments)
    if tagger.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return len(decoded) / (time.perf_counter() - start)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its descendants (MiB), from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total / 1024


def catalogue_run(folder: Path, model_dir: Path, out: Path, device: str, batch_size: int) -> dict:
    """The command as a user runs it; files/s from its closing line, peak memory sampled meanwhile."""
    for stale in out.parent.glob(out.name + "*"):
        stale.unlink()
    accelerator = "gpu" if device == "cuda" else device
    command = [sys.executable, str(REPO_ROOT / "run.py"), "--tag", str(folder), "--checkpoint", str(model_dir),
               "--out", str(out), "--no-progress", "--accelerator", accelerator, "--batch-size", str(batch_size)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    peak = [0.0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"catalogue run failed ({process.returncode}): {stderr.strip()[-2000:]}")
    match = re.search(r"([\d.]+) files/s", stderr)
    return {"files_per_s": float(match.group(1)), "peak_memory_mib": round(peak[0], 1), "closing_line": stderr.strip()}


def main(argv=None) -> int:
    args = parse_args(argv)
    work, out_dir, info, command = start_benchmark(NAME, args, argv)
    import torch

    from datamodules.datasets.mtat.reader import find_audio_root
    from tagging.tagger import resolve_device

    device = resolve_device(args.device).type
    clip_samples = SECONDS * 16_000
    data = synthetic_dataset(work, args.files, clip_samples, args.seed, progress=not args.quick)
    files = sorted(find_audio_root(data).rglob("*.mp3"))[:args.files]
    cores = usable_cores()
    results = []
    for name in args.models:
        tagger = exported_model(name, work / "tagging-models" / name, device)
        tagger.batch_size = args.batch_size
        d, decoded = decode_rate(files, tagger, default_workers(device))
        n = network_rate(tagger, decoded)
        del decoded
        run = catalogue_run(data, work / "tagging-models" / name, work / "tagging-out" / f"{name}.csv", device,
                            args.batch_size)
        bound = min(d, n) if device == "cuda" else d * n / (d + n)
        results.append({"model": name, "segment_seconds": tagger.segment_samples / 16_000,
                        "decode_files_per_s": d, "network_files_per_s": n, "bound_files_per_s": bound,
                        "catalogue_files_per_s": run["files_per_s"], "ratio_to_bound": run["files_per_s"] / bound,
                        "real_time_factor": 1.0 / (run["files_per_s"] * SECONDS),
                        "peak_memory_mib": run["peak_memory_mib"], "closing_line": run["closing_line"]})
        print(f"{name}: D {d:.1f}, N {n:.1f}, catalogue {run['files_per_s']:.1f} files/s "
              f"({run['files_per_s'] / bound:.2f} x bound)", file=sys.stderr, flush=True)
    bound_name = "min(D, N)" if device == "cuda" else "D·N/(D+N)"
    rows = [[r["model"], r["segment_seconds"], r["decode_files_per_s"], r["network_files_per_s"],
             r["bound_files_per_s"], r["catalogue_files_per_s"], r["ratio_to_bound"],
             f"{r['real_time_factor']:.5f}", r["catalogue_files_per_s"] * SECONDS, r["peak_memory_mib"]]
            for r in results]
    table = markdown_table(["model", "input (s)", "D: decode alone (files/s)", "N: network alone (files/s)",
                            f"bound {bound_name}", "catalogue (files/s)", "catalogue / bound",
                            "real-time factor", "x real time", "peak memory (MiB)"], rows)
    markdown = (report_header("Catalogue tagging", info, args.quick, command)
                + f"\n{len(files)} generated {SECONDS} s MP3s (16 kHz mono), device {device}"
                + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else f", {cores} cores")
                + f", batches of {args.batch_size} segments, {default_workers(device)} decoding worker(s) (the catalogue's "
                  "default); untrained full-size networks."
                + f"\n\n{table}\n\nGoal, catalogue >= {GOAL} x bound: "
                + ", ".join(f"{r['model']} {r['ratio_to_bound']:.2f} ({'met' if r['ratio_to_bound'] >= GOAL else 'not met'})"
                            for r in results)
                + ". Real-time factor: processing seconds per second of audio (x real time: its inverse).\n\n"
                + contention_note(info, "each figure is one measurement") + "\n")
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info, "device": device, "files": len(files),
               "seconds_per_file": SECONDS, "batch_size": args.batch_size, "results": results,
               "ratios": {r["model"]: {"catalogue_vs_bound": r["ratio_to_bound"]} for r in results}}
    return publish(out_dir, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
