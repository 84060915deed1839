#!/usr/bin/env python
"""MTG-Jamendo preparation benchmark: the ragged track store against the decode limit.

Measured in one run, on generated MTG-Jamendo-layout tracks of different lengths
(`datamodules.datasets.jamendo.standin`: low-quality mono MP3s in folders 00-99 with the split TSVs;
default 48 tracks of 30-240 s), read as a real MTG-Jamendo folder (`--dataset mtg-jamendo --data
DIR`):

1. Preparation throughput (seconds of audio per second): the data module's `prepare_data` (the
   `JamendoReader` -> `write_ragged_store` path: decode every track in blocks into one int16
   file plus offsets, journalled and fsync-ed), with `--prepare-workers` at all cores and at one.
2. The decode limit: what the store's decoding does per track, alone, on one core over the same
   files: `soundfile.read` of the whole file (float32), mono, resampled to 16 kHz when the file has
   another rate (the stand-in's MP3s are 16 kHz already, as the store finds), int16 conversion.
   Ratio: prepare / (cores x single-core decode rate), as `data_pipeline.py` reports for MTAT.
3. Memory: peak RSS of each measured process (every measurement runs in a fresh process), and
   how much it grew during the measured work, beside the longest track's size as float32: the
   store decodes in blocks of 30 s, so its growth should not follow the track length, while the
   whole-file decode holds a whole track.

Run from the repository root:  python benchmarks/jamendo_prepare.py [--quick]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shutil  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from multiprocessing import get_context  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CpuClock,
    base_parser,
    contention_note,
    markdown_table,
    peak_rss_mib,
    publish,
    report_header,
    start_benchmark,
    stats,
    usable_cores,
)

NAME = "jamendo_prepare"
KEYS = ("decode_1core", "prepare_1worker", "prepare_all")


def parse_args(argv=None):
    parser = base_parser(__doc__)
    parser.add_argument("--tracks", type=int, default=None,
                        help="generated tracks (default 48; quick 24, the fewest that fill every split part)")
    parser.add_argument("--min-seconds", type=float, default=None, help="shortest track (default 30; quick 2)")
    parser.add_argument("--max-seconds", type=float, default=None, help="longest track (default 240; quick 4)")
    parser.add_argument("--workers", type=int, default=None, help="--prepare-workers of the all-cores run "
                                                                  "(default: all cores)")
    args = parser.parse_args(argv)
    q = args.quick
    args.tracks = args.tracks or (24 if q else 48)
    args.min_seconds = args.min_seconds or (2.0 if q else 30.0)
    args.max_seconds = args.max_seconds or (4.0 if q else 240.0)
    args.repeats = args.repeats or (1 if q else 3)
    args.workers = args.workers or usable_cores()
    return args


# ---- measured in a fresh process each ------------------------------------------------------------
def _datamodule(data_dir: str, cache_root: str, workers: int):
    import run
    from experiments.resolve import build_datamodule, resolve

    options = run.parse_options(["--model", "short_chunk_cnn", "--dataset", "mtg-jamendo", "--data", data_dir,
                                 "--cache-dir", cache_root, "--prepare-workers", str(workers), "--no-progress",
                                 "--logger", "none"])
    return build_datamodule(resolve(options))


def _decode_track(path: str) -> int:
    """The store's per-track decoding, on the whole file at once: read, mono, 16 kHz, int16."""
    import soundfile as sf

    from datamodules.decoding import float_to_int16
    from infrastructure.audio import SAMPLE_RATE

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != SAMPLE_RATE:
        from fractions import Fraction

        from scipy.signal import resample_poly

        ratio = Fraction(SAMPLE_RATE, rate)
        mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32, copy=False)
    return len(float_to_int16(np.ascontiguousarray(mono)))


def measure(key: str, data_dir: str, cache_root: str, workers: int) -> dict:
    """One measurement in this (fresh) process: wall and CPU time, samples, peak RSS before and after."""
    datamodule = _datamodule(data_dir, cache_root, workers)
    clips = datamodule.reader.read()
    root = datamodule.reader.audio_root()
    paths = [str(root / p) for p in clips.audio_paths]
    import scipy.signal  # noqa: F401  (imported before the baseline RSS, as the store imports it on demand)
    import soundfile  # noqa: F401

    rss_before = peak_rss_mib()
    with CpuClock() as clock:
        if key == "decode_1core":
            samples = sum(_decode_track(p) for p in paths)
        else:
            datamodule.prepare_data()
    if key != "decode_1core":
        store = datamodule.open_prepared()
        samples = int(store.lengths.sum())
        assert all(e.status == "ok" for e in store.index), "a generated track was skipped"
    return {"wall": clock.wall, "cpu": clock.cpu, "others_cores": clock.others_cores, "idle_cores": clock.idle_cores,
            "samples": samples, "tracks": len(paths), "rss_before_mib": rss_before, "rss_peak_mib": peak_rss_mib()}


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, *args).result()


# ---- the run ---------------------------------------------------------------------------------------
def generated_tracks(work: Path, args) -> Path:
    from datamodules.datasets.jamendo.standin import generate_synthetic_jamendo, synthetic_jamendo_dir_name

    name = synthetic_jamendo_dir_name(args.tracks, args.seed, args.min_seconds, args.max_seconds)
    return generate_synthetic_jamendo(work / "jamendo_prepare-data" / name, n_tracks=args.tracks, seed=args.seed,
                                      min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                                      workers=usable_cores(), progress=not args.quick)


def measure_all(args, data_dir: Path, work: Path) -> dict:
    runs = work / "jamendo_prepare-runs"
    shutil.rmtree(runs, ignore_errors=True)
    if not args.quick:  # page cache and decoder warm
        in_fresh_process("decode_1core", str(data_dir), str(runs / "warm"), 1)
    results = {key: [] for key in KEYS}
    for repeat in range(args.repeats):
        for key in KEYS:
            cache_root = runs / f"cache-{key}-{repeat}"
            workers = args.workers if key == "prepare_all" else 1
            result = in_fresh_process(key, str(data_dir), str(cache_root), workers)
            shutil.rmtree(cache_root, ignore_errors=True)
            results[key].append(result)
            print(f"  repeat {repeat}: {key:16s} {result['samples'] / 16_000 / result['wall']:8.1f} s of audio/s "
                  f"({result['cpu'] / (result['samples'] / 16_000) * 1000:.2f} CPU ms per s of audio, "
                  f"peak RSS {result['rss_peak_mib']:.0f} MiB)", flush=True)
    shutil.rmtree(runs, ignore_errors=True)
    out = {}
    for key, rows in results.items():
        walls = [r["wall"] for r in rows]
        t = stats(walls)
        best = rows[walls.index(t["best"])]
        audio_s = best["samples"] / 16_000
        out[key] = {"seconds": t, "audio_seconds": audio_s, "tracks": best["tracks"],
                    "audio_s_per_s": audio_s / t["best"], "audio_s_per_s_median": audio_s / t["median"],
                    "cpu_ms_per_audio_s": min(r["cpu"] for r in rows) / audio_s * 1000,
                    "cores_used": best["cpu"] / best["wall"], "other_processes_cores": best["others_cores"],
                    "idle_cores": best["idle_cores"], "peak_rss_mib": max(r["rss_peak_mib"] for r in rows),
                    "rss_growth_mib": max(r["rss_peak_mib"] - r["rss_before_mib"] for r in rows)}
    return out


def track_lengths(data_dir: Path) -> np.ndarray:
    import soundfile as sf

    from datamodules.datasets.jamendo.reader import JamendoReader

    reader = JamendoReader(data_dir)
    root = reader.audio_root()
    return np.array([sf.info(str(root / p)).duration for p in reader.read().audio_paths])


def build_report(args, info: dict, results: dict, lengths: np.ndarray, command: list[str]) -> tuple[dict, str]:
    decode = results["decode_1core"]["audio_s_per_s"]
    all_cores, one = results["prepare_all"]["audio_s_per_s"], results["prepare_1worker"]["audio_s_per_s"]
    longest_mib = float(lengths.max()) * 16_000 * 4 / 2**20
    ratios = {"prepare_vs_cores_x_decode": all_cores / (args.workers * decode),
              "prepare_1worker_vs_decode": one / decode,
              "prepare_all_vs_1worker": all_cores / one,
              "prepare_cpu_vs_decode_cpu": results["prepare_all"]["cpu_ms_per_audio_s"]
              / results["decode_1core"]["cpu_ms_per_audio_s"]}
    payload = {"benchmark": NAME, "quick": args.quick, "machine": info,
               "settings": {"tracks": args.tracks, "min_seconds": args.min_seconds, "max_seconds": args.max_seconds,
                            "prepare_workers": args.workers, "repeats": args.repeats, "seed": args.seed},
               "tracks": {"n": int(len(lengths)), "audio_seconds": float(lengths.sum()),
                          "shortest_s": float(lengths.min()), "longest_s": float(lengths.max()),
                          "longest_float32_mib": longest_mib},
               "ratios": ratios, "results": results}
    labels = {"decode_1core": "decode limit: soundfile.read + mono + 16 kHz + int16, whole file, 1 core",
              "prepare_1worker": "suite prepare_data (ragged store), --prepare-workers 1",
              "prepare_all": f"suite prepare_data (ragged store), --prepare-workers {args.workers}"}
    rows = [[label, results[k]["audio_s_per_s"], results[k]["cpu_ms_per_audio_s"], results[k]["cores_used"],
             results[k]["other_processes_cores"], results[k]["idle_cores"], results[k]["peak_rss_mib"],
             results[k]["rss_growth_mib"]] for k, label in labels.items()]
    ratio_rows = [[f"prepare (--prepare-workers {args.workers}) / ({args.workers} x single-core decode rate)",
                   ratios["prepare_vs_cores_x_decode"]],
                  ["prepare (1 worker) / single-core decode rate", ratios["prepare_1worker_vs_decode"]],
                  [f"prepare ({args.workers} workers) / prepare (1 worker)", ratios["prepare_all_vs_1worker"]],
                  ["prepare CPU per audio second / decode CPU per audio second", ratios["prepare_cpu_vs_decode_cpu"]]]
    load = info.get("load_average_at_start")
    md = [report_header("MTG-Jamendo preparation benchmark", info, args.quick, command),
          f"Data: {args.tracks} generated MTG-Jamendo-layout low-quality MP3s (16 kHz mono, "
          f"`datamodules.datasets.jamendo.standin`, seed {args.seed}), of which the {len(lengths)} in split 0 of "
          f"`top50tags` are prepared: {lengths.min():.1f}-{lengths.max():.1f} s, "
          f"{lengths.sum() / 60:.1f} min of audio in all, read as a real MTG-Jamendo folder (`--dataset mtg-jamendo "
          f"--data DIR`, whole tracks); files in the page cache; every measurement in a fresh process. Best of "
          f"{args.repeats} repeat(s). Load average at start: "
          + (f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)" if load else "n/a") + ".\n",
          "## Ratios\n", markdown_table(["ratio", "value"], ratio_rows),
          "\n## Preparation (seconds of audio per second)\n",
          markdown_table(["method", "audio s/s", "CPU ms per audio s", "cores used (CPU s / wall s)",
                          "cores used by other processes meanwhile", "cores idle or in I/O wait meanwhile",
                          "peak RSS MiB", "RSS growth during the work MiB"], rows),
          f"\nThe longest track is {lengths.max():.1f} s: {longest_mib:.1f} MiB as float32. With one worker the "
          "store decodes in 30 s blocks and writes each before the next, so its RSS growth stays near one block "
          "whatever the track length; with several, each worker process decodes whole tracks (int16, at most "
          "2 x workers in flight), and the whole-file decode (the limit's baseline) holds a whole track at a time.",
          "\nEach extra worker is a spawned process that imports numpy, soundfile and the suite (about a second "
          "of CPU) and sends its tracks back through a pipe: on a set that decodes in a few seconds, that cost "
          "can exceed the gain; on the real dataset (hours of decoding) it does not matter.",
          "\n" + contention_note(info)]
    return payload, "\n".join(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    work, out, info, command = start_benchmark(NAME, args, argv)
    print(f"MTG-Jamendo preparation benchmark: work dir {work}", flush=True)
    data_dir = generated_tracks(work, args)
    lengths = track_lengths(data_dir)
    results = measure_all(args, data_dir, work)
    payload, markdown = build_report(args, info, results, lengths, command)
    return publish(out, NAME, payload, markdown, args.quick)


if __name__ == "__main__":
    sys.exit(main())
