#!/usr/bin/env python
"""Data pipeline benchmark: decode-once cache and loader against the common MTAT recipe.

Measured in one run, on the suite's synthetic MTAT-layout MP3s (full 465,984-sample clips):

1. Preparation throughput (clips/s):
   * the suite's `prepare_data` (MTATDataModule -> `prepare_cache`: decode with soundfile into one
     int16 array, in parallel over all cores, fsync-ed and resumable), with all cores and with one;
   * the common MTAT recipe: `librosa.load(path, sr=16000)` per file, saved as one float32 `.npy`
     per clip, in one process;
   * the decoder alone: `soundfile.read(path)` per file on one core (the bound for both).
   Ratios: prepare / librosa recipe, and prepare / (cores x single-core decode rate) (target >= 0.8).
   CPU seconds per clip are reported too: unlike wall time they hardly move when other work shares
   the machine.
2. Loader throughput (segments/s) of the suite's training loader (memmap slices of the cache,
   random crops) against a per-clip `.npy` loader with random crops (the whole `.npy` read with
   `np.load`, and the `mmap_mode="r"` variant), same sampler, batch size and worker count.
3. The suite's loader with a model's own segments against that model's training-step consumption
   (segments/s of frontend + forward + backward + SGD on a real batch), for the Mel models (the
   waveform models consume far fewer segments per second, see `training.py`). Target: >= 10x.

Run from the repository root:  python benchmarks/data_pipeline.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CpuClock,
    ModelSetup,
    add_dataset_arguments,
    base_parser,
    benchmark_dataset,
    contention_note,
    data_module,
    fill_dataset_defaults,
    markdown_table,
    model_setup,
    publish,
    real_batch,
    report_header,
    start_benchmark,
    stats,
    usable_cores,
)

NAME = "data_pipeline"
LEE_CROP = 59_049


def parse_args(argv=None):
    parser = base_parser(__doc__)
    add_dataset_arguments(parser, rows=2048)
    parser.add_argument("--workers", type=int, default=None, help="preparation processes (default: all cores)")
    parser.add_argument("--batch-size", type=int, default=32, help="loader batch size for the .npy comparison")
    parser.add_argument("--consumers", default=None,
                        help="comma-separated models whose training-step consumption is measured "
                             "(default mel_cnn,lstm_mel; quick mel_cnn)")
    parser.add_argument("--steps", type=int, default=None, help="measured training steps per consumer (3; quick 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    fill_dataset_defaults(args, quick_clip_samples=2 * LEE_CROP)
    args.repeats = args.repeats or (1 if quick else 3)
    args.steps = args.steps or (1 if quick else 3)
    args.consumers = (args.consumers or ("mel_cnn" if quick else "mel_cnn,lstm_mel")).split(",")
    args.workers = args.workers or usable_cores()
    return args


# ---- 1. preparation ------------------------------------------------------------------------------------
def decode_only(paths: list[Path]) -> CpuClock:
    import soundfile as sf

    with CpuClock() as clock:
        for path in paths:
            sf.read(str(path), dtype="float32")
    return clock


def librosa_recipe(paths: list[Path], out_dir: Path) -> CpuClock:
    """The common MTAT preprocessing: librosa.load at 16 kHz, one float32 .npy per clip."""
    import librosa

    from infrastructure.audio import SAMPLE_RATE

    out_dir.mkdir(parents=True, exist_ok=True)
    with CpuClock() as clock:
        for row, path in enumerate(paths):
            y, _ = librosa.load(str(path), sr=SAMPLE_RATE)
            np.save(out_dir / f"{row}.npy", y)
    return clock


def suite_prepare(data_dir: Path, cache_root: Path, setup, workers: int) -> CpuClock:
    """The suite's one-time preparation (MTATDataModule.prepare_data -> prepare_cache)."""
    dm = data_module(data_dir, cache_root, setup, prepare_workers=workers)
    with CpuClock() as clock:
        dm.prepare_data()
    return clock


def measure_prepare(args, data_dir: Path, work: Path, setup) -> tuple[dict, Path, Path]:
    from datamodules.datasets.mtat.annotations import read_annotations
    from datamodules.datasets.mtat.reader import find_audio_root

    annotations = read_annotations(data_dir / "annotations_final.csv")
    root = find_audio_root(data_dir)
    paths = [root / p for p in annotations.mp3_paths]
    runs = work / "data_pipeline-runs"
    shutil.rmtree(runs, ignore_errors=True)
    decode_only(paths[: min(len(paths), 64)])  # page cache and decoder warm
    librosa_recipe(paths[:1], runs / "warm")
    timings = {k: [] for k in ("decode_1core", "librosa_1proc", "prepare_1worker", "prepare_all")}
    cpu = {k: [] for k in timings}
    others = {k: [] for k in timings}
    idle = {k: [] for k in timings}
    kept_cache = kept_npy = None
    for repeat in range(args.repeats):
        for key in timings:
            if key == "decode_1core":
                clock = decode_only(paths)
            elif key == "librosa_1proc":
                if kept_npy is not None:  # one set of .npy files on disk at a time
                    shutil.rmtree(kept_npy)
                kept_npy = runs / f"npy-{repeat}"
                clock = librosa_recipe(paths, kept_npy)
            else:
                workers = 1 if key == "prepare_1worker" else args.workers
                if key == "prepare_all" and kept_cache is not None:  # one full cache on disk at a time
                    shutil.rmtree(kept_cache)
                cache_root = runs / f"cache-{key}-{repeat}"
                clock = suite_prepare(data_dir, cache_root, setup, workers)
                if key == "prepare_all":
                    kept_cache = cache_root
                else:
                    shutil.rmtree(cache_root)
            timings[key].append(clock.wall)
            cpu[key].append(clock.cpu)
            others[key].append(clock.others_cores)
            idle[key].append(clock.idle_cores)
            print(f"  prepare repeat {repeat}: {key:16s} {len(paths) / clock.wall:8.1f} clips/s "
                  f"({clock.cpu / len(paths) * 1000:.2f} CPU ms/clip)", flush=True)
    n = len(paths)
    result = {"clips": n}
    for key in timings:
        t = stats(timings[key])
        best = timings[key].index(t["best"])
        result[key] = {"seconds": t, "clips_per_s": n / t["best"], "clips_per_s_median": n / t["median"],
                       "cpu_ms_per_clip": min(cpu[key]) / n * 1000,
                       "cores_used": cpu[key][best] / timings[key][best],  # CPU s per wall s in the best run
                       "other_processes_cores": others[key][best],  # cores other processes kept busy meanwhile
                       "idle_cores": idle[key][best]}  # cores idle or waiting for I/O meanwhile
    return result, kept_cache, kept_npy


# ---- 2. loaders -------------------------------------------------------------------------------------------
class NpyCropDataset:
    """The common recipe's training dataset: one .npy per clip, a random crop per item."""

    def __init__(self, files: list[Path], labels: np.ndarray, crop: int, seed: int, mmap: bool):
        self.files, self.labels, self.crop, self.seed, self.mmap = files, labels, crop, seed, mmap

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key):
        import torch

        item, epoch = key
        audio = np.load(self.files[item], mmap_mode="r" if self.mmap else None)
        start = int(np.random.default_rng([self.seed, epoch, item]).integers(0, len(audio) - self.crop + 1))
        segment = np.array(audio[start:start + self.crop], dtype=np.float32)
        return {"waveform": torch.from_numpy(segment), "target": torch.from_numpy(self.labels[item])}


def time_loader(loader, epochs: int) -> dict:
    """Segments per second over full passes of a loader (epoch 0 warms workers up and is not counted)."""
    times, items = [], 0
    for epoch in range(epochs + 1):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        items = 0
        for batch in loader:
            items += len(batch["target"])
        if epoch:
            times.append(time.perf_counter() - start)
    t = stats(times)
    return {"items": items, "seconds": t, "items_per_s": items / t["best"], "items_per_s_median": items / t["median"]}


def measure_loaders(args, data_dir: Path, cache_root: Path, npy_dir: Path, crops: list[int],
                    worker_counts: list[int]) -> list[dict]:
    from torch.utils.data import DataLoader

    from datamodules.sampling import EpochSampler
    from datamodules.segments import SegmentLayout

    rows = []
    for crop in crops:
        for workers in worker_counts:
            setup = ModelSetup(f"random {crop}-sample crops", None, SegmentLayout(crop, 1, "random"), (crop,),
                               args.batch_size, 1)
            dm = data_module(data_dir, cache_root, setup, num_workers=workers, seed=args.seed)
            dm.setup("fit")
            train = dm.dataset("train")
            suite = time_loader(dm.train_dataloader(), args.repeats)
            labels = train.labels[train.rows]
            results = {"crop_samples": crop, "workers": workers, "suite_cache": suite}
            for variant, mmap in (("npy_load", False), ("npy_mmap", True)):
                dataset = NpyCropDataset([npy_dir / f"{r}.npy" for r in train.rows], labels, crop, args.seed, mmap)
                sampler = EpochSampler(len(dataset), shuffle=True, pad=True, seed=args.seed)
                loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=workers,
                                    persistent_workers=workers > 0)
                results[variant] = time_loader(loader, args.repeats)
            results["ratio_vs_npy_load"] = suite["items_per_s"] / results["npy_load"]["items_per_s"]
            results["ratio_vs_npy_mmap"] = suite["items_per_s"] / results["npy_mmap"]["items_per_s"]
            print(f"  loader crop {crop} workers {workers}: cache {suite['items_per_s']:.0f}/s, "
                  f"npy {results['npy_load']['items_per_s']:.0f}/s, npy mmap {results['npy_mmap']['items_per_s']:.0f}/s",
                  flush=True)
            rows.append(results)
    return rows


# ---- 3. loader against training consumption -----------------------------------------------------------
def train_step_seconds(setup, waveform, target, n_tags: int, steps: int, warmup: int = 1) -> list[float]:
    """Wall time of frontend + forward + backward + SGD step on one real batch (CPU)."""
    import torch
    import torch.nn.functional as F

    from datamodules.frontend import build_frontend
    from infrastructure.audio import INT16_SCALE
    from lightning_modules.registry import build_network

    network = build_network(setup.network_config(n_tags))
    frontend = build_frontend(setup.frontend)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        model_input = frontend(waveform.float() / INT16_SCALE)
        loss = F.binary_cross_entropy_with_logits(network(model_input), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def measure_consumers(args, data_dir: Path, cache_root: Path) -> list[dict]:
    rows = []
    quick_mel = {"mel_cnn": {"hop_length": 512, "n_mels": 96}, "lstm_mel": {"hop_length": 256, "n_mels": 64}}
    for name in args.consumers:
        setup = model_setup(name, args.clip_samples, quick_mel.get(name) if args.quick else None,
                            batch_size=4 if args.quick else None)
        waveform, target, n_tags = real_batch(data_dir, cache_root, setup, args.seed)
        steps = stats(train_step_seconds(setup, waveform, target, n_tags, args.steps))
        consumption = setup.batch_size / steps["best"]
        dm = data_module(data_dir, cache_root, setup, num_workers=None, seed=args.seed)
        dm.setup("fit")
        workers = dm._num_workers()
        loader = time_loader(dm.train_dataloader(), args.repeats)
        ratio = loader["items_per_s"] / consumption
        print(f"  consumer {name}: step {steps['best']:.2f} s ({consumption:.1f} segments/s); loader "
              f"{loader['items_per_s']:.0f} segments/s with {workers} worker(s): {ratio:.0f}x", flush=True)
        rows.append({"model": name, "batch_size": setup.batch_size, "segment_samples": setup.layout.segment_samples,
                     "segments_per_clip": setup.segments_per_clip, "train_crop": setup.layout.train_crop,
                     "step_seconds": steps, "consumption_items_per_s": consumption,
                     "consumption_clips_per_s": consumption / setup.segments_per_clip,
                     "loader_workers": workers, "loader": loader,
                     "ratio_loader_vs_consumption": ratio})
    return rows


# ---- report -------------------------------------------------------------------------------------------------
def build_report(args, info, prepare, loaders, consumers, command) -> tuple[dict, str]:
    decode = prepare["decode_1core"]["clips_per_s"]
    ratios = {
        "prepare_vs_librosa": prepare["prepare_all"]["clips_per_s"] / prepare["librosa_1proc"]["clips_per_s"],
        "prepare_1worker_vs_librosa": prepare["prepare_1worker"]["clips_per_s"] / prepare["librosa_1proc"]["clips_per_s"],
        "prepare_vs_cores_x_decode": prepare["prepare_all"]["clips_per_s"] / (args.workers * decode),
        "prepare_cpu_vs_decode_cpu": prepare["decode_1core"]["cpu_ms_per_clip"] / prepare["prepare_all"]["cpu_ms_per_clip"],
        "librosa_cpu_vs_decode_cpu": prepare["decode_1core"]["cpu_ms_per_clip"] / prepare["librosa_1proc"]["cpu_ms_per_clip"],
        "loader_vs_npy_load": {f"crop{r['crop_samples']}_workers{r['workers']}": r["ratio_vs_npy_load"] for r in loaders},
        "loader_vs_npy_mmap": {f"crop{r['crop_samples']}_workers{r['workers']}": r["ratio_vs_npy_mmap"] for r in loaders},
        "loader_vs_consumption": {r["model"]: r["ratio_loader_vs_consumption"] for r in consumers},
    }
    # The fastest model trains the most clips per second (an epoch holds segments_per_clip segments per clip).
    fastest = max(consumers, key=lambda r: r["consumption_clips_per_s"])
    ratios["loader_vs_fastest_model"] = fastest["ratio_loader_vs_consumption"]
    ratios["loader_vs_consumption_min"] = min(r["ratio_loader_vs_consumption"] for r in consumers)
    targets = {
        "prepare_vs_cores_x_decode >= 0.8": ratios["prepare_vs_cores_x_decode"] >= 0.8,
        "loader_vs_fastest_model >= 10": ratios["loader_vs_fastest_model"] >= 10,
    }
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info,
               "settings": {"distinct_clips": args.distinct_clips, "rows": args.rows, "clip_samples": args.clip_samples,
                            "prepare_workers": args.workers, "repeats": args.repeats, "batch_size": args.batch_size,
                            "consumers": args.consumers, "steps": args.steps},
               "ratios": ratios, "targets_met": targets, "fastest_model": fastest["model"],
               "prepare": prepare, "loaders": loaders, "consumers": consumers}

    p = prepare
    labels = {"decode_1core": "soundfile.read only (decoder bound), 1 core",
              "librosa_1proc": "librosa.load(sr=16000) + one .npy per clip, 1 process",
              "prepare_1worker": "suite prepare_data, 1 worker",
              "prepare_all": f"suite prepare_data, {args.workers} workers"}
    librosa_rate = p["librosa_1proc"]["clips_per_s"]
    prep_rows = [[label, p[key]["clips_per_s"], p[key]["cpu_ms_per_clip"], p[key]["cores_used"],
                  p[key]["other_processes_cores"], p[key]["idle_cores"],
                  p[key]["clips_per_s"] / librosa_rate if key != "decode_1core" else "-"]
                 for key, label in labels.items()]
    ratio_rows = [
        ["prepare (all cores) / librosa recipe (1 process)", ratios["prepare_vs_librosa"], "report"],
        ["prepare (1 worker) / librosa recipe (1 process)", ratios["prepare_1worker_vs_librosa"], "report"],
        [f"prepare / ({args.workers} x single-core decode rate)", ratios["prepare_vs_cores_x_decode"], ">= 0.8"],
        ["decode CPU per clip / prepare CPU per clip", ratios["prepare_cpu_vs_decode_cpu"], "report"],
        [f"suite loader / training consumption of the fastest model ({fastest['model']})",
         ratios["loader_vs_fastest_model"], ">= 10"],
        ["suite loader / training consumption, lowest over the models measured", ratios["loader_vs_consumption_min"],
         "report"],
    ]
    loader_rows = [[r["crop_samples"], r["workers"], r["suite_cache"]["items_per_s"], r["npy_load"]["items_per_s"],
                    r["npy_mmap"]["items_per_s"], r["ratio_vs_npy_load"], r["ratio_vs_npy_mmap"]] for r in loaders]
    consumer_rows = [[r["model"], r["batch_size"], f"{r['segment_samples']:,} x {r['segments_per_clip']}",
                      r["step_seconds"]["best"], r["consumption_items_per_s"], r["consumption_clips_per_s"],
                      r["loader_workers"], r["loader"]["items_per_s"], r["ratio_loader_vs_consumption"]]
                     for r in consumers]
    md = [report_header("Data pipeline benchmark", info, args.quick, command),
          f"Data: the suite's synthetic MTAT-layout MP3s, {args.distinct_clips} generated clips of {args.clip_samples:,} "
          f"samples, {args.rows:,} dataset rows (rows beyond the generated clips link to them again); files in the page "
          f"cache. Best of {args.repeats} repeat(s).\n",
          "## Ratios\n", markdown_table(["ratio", "value", "target"], ratio_rows),
          "\n## Preparation (clips/s)\n",
          markdown_table(["method", "clips/s", "CPU ms/clip", "cores used (CPU s / wall s)",
                          "cores used by other processes meanwhile", "cores idle or in I/O wait meanwhile",
                          "x librosa recipe"], prep_rows),
          "\n## Loader: suite cache vs per-clip .npy, random crops (segments/s)\n",
          markdown_table(["crop (samples)", "workers", "suite cache", ".npy np.load", ".npy mmap",
                          "x np.load", "x mmap"], loader_rows),
          "\n## Loader vs training-step consumption (model's own segments, suite default workers)\n",
          markdown_table(["model", "batch", "segment samples x per clip", "step s", "consumed segments/s",
                          "consumed clips/s", "loader workers", "loader segments/s", "loader / consumption"],
                         consumer_rows),
          "\nTargets met: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in targets.items()),
          "\n" + contention_note(info)]
    return payload, "\n".join(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    work, out, info, command = start_benchmark(NAME, args, argv)
    print(f"data pipeline benchmark: work dir {work}", flush=True)
    data_dir = benchmark_dataset(work, args.distinct_clips, args.rows, args.clip_samples, args.seed,
                                 progress=not args.quick)
    crop_setup = model_setup("sample_cnn_frames", args.clip_samples)
    prepare, cache_root, npy_dir = measure_prepare(args, data_dir, work, crop_setup)
    crops = sorted({min(LEE_CROP, args.clip_samples), model_setup("mel_cnn", args.clip_samples).layout.segment_samples})
    # One loader process, and the suite's default (cores per device - 1). Not 0: collating in the main
    # process runs torch.stack on torch's intra-op threads, which stall when another process holds a core
    # (30 MB batch: ~20 ms with one thread, ~250 ms with two on a busy 2-core machine), as training does.
    worker_counts = sorted({1, max(1, min(8, usable_cores() - 1))})
    loaders = measure_loaders(args, data_dir, cache_root, npy_dir, crops, worker_counts)
    consumers = measure_consumers(args, data_dir, cache_root)
    payload, markdown = build_report(args, info, prepare, loaders, consumers, command)
    shutil.rmtree(work / "data_pipeline-runs", ignore_errors=True)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
