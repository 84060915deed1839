"""Shared pieces of the benchmarks: machine description, timing statistics, result files, data.

Every benchmark works on audio produced by the suite itself: a synthetic MTAT-layout dataset
(`datamodules.datasets.mtat.standin`, full 465,984-sample clips by default) kept in a work folder outside the
repository (default ``$MTAT_TAGGING_CACHE/benchmarks`` or ``~/.cache/mtat-tagging/benchmarks``),
decoded once into the suite's waveform cache (`datamodules.store`). Generating the MP3s is slow
(a few clips per second per core), so the dataset is generated on first use and reused.

A larger dataset than the one generated is made by *expanding* it: an MTAT-layout folder whose
annotation rows repeat the generated rows (new clip ids, same labels) and whose MP3 files are
symbolic links to the generated ones, spread over the folders 0-f like MTAT. Decoding, caching
and loading cost the same per row as with distinct files (the decoder reads each link in full).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
HEX = "0123456789abcdef"

MTAT_ROWS = 25_863
"""Rows of MTAT's annotations_final.csv."""

MTAT_FOLDER_TRAIN_CLIPS = 18_706
"""Usable training clips of MTAT's folder split (folders 0-b: 18,709 rows minus 3 zero-byte MP3s)."""


# ---- machine -------------------------------------------------------------------------------------
def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family/model numbers and vector units, e.g. "AMD EPYC (family 23 model 49,
    avx2)" (from /proc/cpuinfo on Linux, else `platform.processor()`).

    Virtual machines often mask the name ("AMD EPYC"), and kernels differ between CPU generations (AVX2 against
    AVX-512), so the same seed can give other floats on another host: the numbers say which host it was.
    """
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        text = ""
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # the first processor is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine() or "unknown"
    flags = set(fields.get("flags", "").split())
    detail = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields and "model" in fields else []
    detail += [flag for flag in ("avx512f", "avx2", "amx_tile") if flag in flags]
    return f"{name} ({', '.join(detail)})" if detail else name


def usable_cores() -> int:
    """CPU cores this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return None


def machine_info() -> dict:
    """What the numbers were measured on: CPU, cores, memory, GPU, library versions, load."""
    import torch

    info = {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": _version("torchaudio"),
        "nnAudio": _version("nnAudio"),
        "lightning": _version("lightning"),
        "numpy": _version("numpy"),
        "soundfile": _version("soundfile"),
        "librosa": _version("librosa"),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    info.update(git_state())
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


NOT_CODE = ("docs", "benchmarks/results", "*.md")
"""What a measurement's code line leaves out: prose, and the results a benchmark writes itself."""


def git_state(root: Path = REPO_ROOT) -> dict:
    """The repository's commit and the files, other than `NOT_CODE`, that differed from it when measured.

    Every package counts, the benchmark scripts included: a results file names the commit that holds the
    code it ran, or says which files it ran with that no commit holds (new ones too).
    """
    import subprocess

    def git(*args):
        done = subprocess.run(["git", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, check=False)
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--untracked-files=all", "--", ".",
                  *(f":(exclude){path}" for path in NOT_CODE))
    return {"git_commit": git("rev-parse", "--short", "HEAD"),
            "suite_files_modified": [line[3:] for line in changed.splitlines()] if changed else []}


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far, all threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    load = info.get("load_average_at_start")
    load_text = f"; 1-min load average at start {load[0]:.2f}" if load else ""
    modified = info.get("suite_files_modified")
    code = f"; code: commit {info.get('git_commit')}" + (f" with uncommitted changes in {', '.join(modified)}"
                                                         if modified else "")
    return (f"{info['cpu_model']}, {info['cores']} cores, {info.get('memory_gib', '?')} GiB{gpu}; torch "
            f"{info['torch']}, torchaudio {info['torchaudio']}, nnAudio {info['nnAudio']}, lightning "
            f"{info['lightning']}; Python {info['python']}{load_text}; {info['date']}{code}")


# ---- timing ----------------------------------------------------------------------------------------
def stats(values: list[float]) -> dict:
    """best (minimum), median and all values of a list of timings in seconds."""
    if not values:
        raise ValueError("no timings")
    return {"best": min(values), "median": statistics.median(values), "values": [round(v, 6) for v in values]}


def _cpu_ticks() -> list[int] | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine have used since boot (Linux /proc/stat; else None)."""
    ticks = _cpu_ticks()
    return None if ticks is None else (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def machine_idle_seconds() -> float | None:
    """Idle (including I/O wait) CPU seconds of the machine since boot (Linux /proc/stat; else None)."""
    ticks = _cpu_ticks()
    return None if ticks is None else (ticks[3] + ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """Wall time and CPU time (this process plus its finished children) over a block.

    Also `others_cores`: the average number of cores that *other* processes kept busy meanwhile
    (machine-wide busy CPU time from /proc/stat minus ours, over the wall time), and `idle_cores`:
    the average number of cores idle or waiting for I/O (None off Linux).
    """

    def __enter__(self) -> CpuClock:
        import resource

        self._resource = resource
        self._machine, self._idle = machine_busy_seconds(), machine_idle_seconds()
        self._wall = time.perf_counter()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc) -> None:
        r = self._resource
        self.wall = time.perf_counter() - self._wall
        me, kids = r.getrusage(r.RUSAGE_SELF), r.getrusage(r.RUSAGE_CHILDREN)
        self.cpu = ((me.ru_utime + me.ru_stime) - (self._self.ru_utime + self._self.ru_stime)
                    + (kids.ru_utime + kids.ru_stime) - (self._children.ru_utime + self._children.ru_stime))
        machine, idle = machine_busy_seconds(), machine_idle_seconds()
        known = machine is not None and self._machine is not None and self.wall > 0
        self.others_cores = max(0.0, (machine - self._machine) - self.cpu) / self.wall if known else None
        self.idle_cores = (idle - self._idle) / self.wall if known else None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (`resource.getrusage` max RSS)."""
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 1024


# ---- output ------------------------------------------------------------------------------------------
def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out_dir: Path, name: str, payload: dict, markdown: str, quick: bool) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` (``<name>.quick.*`` in quick mode) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}.quick" if quick else name
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def publish(out_dir: Path, name: str, payload: dict, markdown: str, quick: bool) -> int:
    """Write the outputs, print the markdown report and where it was written; the exit code (0)."""
    json_path, md_path = write_outputs(out_dir, name, payload, markdown, quick)
    print(markdown)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def report_header(title: str, info: dict, quick: bool, command: list[str]) -> str:
    mode = " (quick mode: tiny sizes, not representative)" if quick else ""
    return (f"# {title}{mode}\n\nMachine: {machine_line(info)}\n\n"
            f"Command: `python {' '.join(command)}`\n")


def contention_note(info: dict, repeats: str = "each figure is the best of several repeats") -> str:
    """What else ran on the machine; `repeats` says how each figure was taken."""
    load = info.get("load_average_at_start")
    if not load:
        return ""
    return (f"Contention: the 1-minute load average was {load[0]:.2f} on {info['cores']} cores when this run "
            f"started (other work shared the machine); {repeats}, and ratios compare figures measured in the "
            "same run.")


# ---- command line --------------------------------------------------------------------------------
def default_work_dir() -> Path:
    from infrastructure.locations import default_cache_root

    return default_cache_root() / "benchmarks"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: checks that the benchmark runs (seconds, not minutes)")
    parser.add_argument("--work-dir", default=None,
                        help="where the generated dataset and caches are kept (default: $MTAT_TAGGING_CACHE/"
                             "benchmarks or ~/.cache/mtat-tagging/benchmarks); never inside the repository")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR),
                        help="where the JSON and markdown results go (default: benchmarks/results)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (best and median are kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset and of the crops")
    return parser


QUICK_CLIP_SAMPLES = 118_098  # 2 x 3^10: long enough for every model, short enough for seconds-long checks


def add_dataset_arguments(parser: argparse.ArgumentParser, rows: int | None = 256) -> None:
    """--distinct-clips, --clip-samples and (when ``rows``) --rows, with `fill_dataset_defaults`."""
    parser.add_argument("--distinct-clips", type=int, default=None,
                        help="clips generated (MP3s written by the synthetic generator; default 256, quick 6)")
    if rows:
        parser.add_argument("--rows", type=int, default=None,
                            help=f"dataset rows, linking the generated clips repeatedly (default {rows}, quick 48)")
    parser.add_argument("--clip-samples", type=int, default=None, help="clip length (default MTAT's 465,984)")
    parser.set_defaults(default_rows=rows)


def fill_dataset_defaults(args, quick_clip_samples: int = QUICK_CLIP_SAMPLES) -> None:
    """The sizes `add_dataset_arguments` left unset: full size, or tiny with --quick."""
    from infrastructure.audio import MTAT_CLIP_SAMPLES

    q = args.quick
    args.distinct_clips = args.distinct_clips or (6 if q else 256)
    if args.default_rows:
        args.rows = args.rows or (48 if q else args.default_rows)
    args.clip_samples = args.clip_samples or (quick_clip_samples if q else MTAT_CLIP_SAMPLES)


def start_benchmark(name: str, args, argv) -> tuple[Path, Path, dict, list[str]]:
    """The opening of every benchmark's main: (work dir, output dir, machine info, the command as run)."""
    work, out = resolve_dirs(args)
    return work, out, machine_info(), [f"benchmarks/{name}.py", *(sys.argv[1:] if argv is None else argv)]


def resolve_dirs(args) -> tuple[Path, Path]:
    work = Path(args.work_dir).expanduser().resolve() if args.work_dir else default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    return work, Path(args.out_dir).expanduser().resolve()


# ---- data -------------------------------------------------------------------------------------------
def synthetic_dataset(work_dir: Path, n_clips: int, clip_samples: int, seed: int = 0,
                      workers: int | None = None, progress: bool = True) -> Path:
    """The suite's synthetic MTAT-layout dataset in ``work_dir`` (generated on first use)."""
    from datamodules.datasets.mtat.standin import ensure_synthetic_mtat

    return ensure_synthetic_mtat(work_dir, n_clips=n_clips, clip_samples=clip_samples, seed=seed,
                                 workers=workers, progress=progress)


def expanded_dataset(source: Path, target: Path, rows: int) -> Path:
    """An MTAT-layout folder of ``rows`` rows whose MP3s are links to the clips of ``source``.

    Row i repeats source row ``i % n`` (same labels, clip id ``2 + 3 * i``); its MP3 is a
    symbolic link in folder ``HEX[i % 16]``, so the folder split keeps MTAT's proportions.
    ``source``'s ``synthetic.json`` clip length is carried over. Reuses a complete ``target``.
    """
    from datamodules.datasets.mtat.annotations import read_annotations
    from datamodules.datasets.mtat.reader import find_audio_root

    source, target = Path(source).resolve(), Path(target).resolve()
    done = target / "expanded.json"
    meta = {"source": str(source), "rows": rows}
    if done.is_file() and json.loads(done.read_text()) == meta:
        return target
    annotations = read_annotations(source / "annotations_final.csv")
    audio = find_audio_root(source)
    n = len(annotations)
    header = ["clip_id", *annotations.tag_names, "mp3_path"]
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(header)
    for folder in HEX:
        (target / "mp3" / folder).mkdir(parents=True, exist_ok=True)
    for i in range(rows):
        j = i % n
        name = Path(annotations.mp3_paths[j]).name
        rel = f"{HEX[i % 16]}/r{i:06d}-{name}"
        link = target / "mp3" / rel
        if not link.is_symlink():
            link.symlink_to(audio / annotations.mp3_paths[j])
        writer.writerow([2 + 3 * i, *map(str, annotations.labels[j].tolist()), rel])
    (target / "annotations_final.csv").write_text(text.getvalue(), encoding="utf-8", newline="")
    clip_meta = source / "synthetic.json"
    if clip_meta.is_file():
        clip_samples = json.loads(clip_meta.read_text())["clip_samples"]
        (target / "synthetic.json").write_text(json.dumps({"clip_samples": clip_samples, "expanded_from": str(source)}))
    done.write_text(json.dumps(meta))
    return target


def benchmark_dataset(work_dir: Path, distinct: int, rows: int, clip_samples: int, seed: int = 0,
                      progress: bool = True) -> Path:
    """The generated dataset of ``distinct`` clips, expanded to ``rows`` rows when more are asked for."""
    source = synthetic_dataset(work_dir, distinct, clip_samples, seed, progress=progress)
    if rows <= distinct:
        return source
    return expanded_dataset(source, Path(work_dir) / f"expanded-{rows}-from-{source.name}", rows)


@dataclass(frozen=True)
class ModelSetup:
    """A model as the suite trains it: frontend, segments, network config, batch size."""

    name: str
    frontend: object  # MelConfig or None
    layout: object  # SegmentLayout
    input_shape: tuple
    batch_size: int
    segments_per_clip: int

    def network_config(self, n_tags: int) -> dict:
        from lightning_modules.registry import MODELS, network_config

        return network_config(MODELS[self.name], self.input_shape, n_tags)


def model_setup(name: str, clip_samples: int, mel_overrides: dict | None = None, batch_size: int | None = None,
                backend: str | None = None, train_crop: str | None = None) -> ModelSetup:
    """The suite's configuration of model ``name`` for clips of ``clip_samples`` (paper defaults)."""
    from experiments.options import RunOptions
    from experiments.resolve import mel_settings
    from lightning_modules.registry import input_shape, model_spec, segment_layout

    spec = model_spec(name)
    options = RunOptions(model=name, **(mel_overrides or {}))
    if backend and spec.frontend is not None:
        options = options.replace(mel_backend=backend)
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, clip_samples, frontend, None, train_crop)
    return ModelSetup(name, frontend, layout, input_shape(frontend, layout), batch_size or spec.batch_size,
                      layout.segments_per_clip)


def data_module(data_dir: Path, cache_root: Path, setup: ModelSetup, num_workers: int | None = 0, seed: int = 0,
                batch_size: int | None = None, prepare_workers: int | None = None):
    """The suite's MTATDataModule for ``setup`` over ``data_dir`` (cache under ``cache_root``)."""
    from datamodules.datamodule import MTATDataModule

    frontend = setup.frontend.to_dict() if setup.frontend is not None else None
    return MTATDataModule(str(data_dir), str(cache_root), layout=setup.layout.to_dict(), frontend=frontend,
                          batch_size=batch_size or setup.batch_size, num_workers=num_workers, seed=seed,
                          progress=False, pin_memory=False, prepare_workers=prepare_workers)


def real_batch(data_dir: Path, cache_root: Path, setup: ModelSetup, seed: int = 0) -> tuple:
    """One training batch of ``setup`` from the suite's loader: (int16 waveforms, targets, n_tags).

    A training split smaller than the batch is repeated to fill it.
    """
    import torch

    dm = data_module(data_dir, cache_root, setup, num_workers=0, seed=seed)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    waveform, target = batch["waveform"], batch["target"]
    if len(waveform) < setup.batch_size:
        index = torch.arange(setup.batch_size) % len(waveform)
        waveform, target = waveform[index], target[index]
    return waveform.contiguous(), target.contiguous(), len(dm.tags)


def network_flops_per_item(setup: ModelSetup, n_tags: int) -> float:
    """FLOPs of one training step's network forward + backward per item (counted on the meta device).

    `torch.utils.flop_counter` counts matmuls and convolutions (LSTMs decompose into matmuls on
    the meta device); the Mel frontend, batch norm and element-wise work are not included.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_modules.registry import build_network

    with torch.device("meta"):
        network = build_network(setup.network_config(n_tags))
        x = torch.randn(2, *setup.input_shape)
        y = torch.zeros(2, n_tags)
    counter = FlopCounterMode(display=False)
    with counter:
        F.binary_cross_entropy_with_logits(network(x), y).backward()
    return counter.get_total_flops() / 2
