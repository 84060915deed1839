"""Where a run's metrics go: Weights & Biases (online or offline), CSV, TensorBoard, or nowhere.

`--logger wandb` is the default. It logs online when the user is logged in to W&B (an API key in
`WANDB_API_KEY`, or a netrc entry for the W&B host, as `wandb login` writes it) and the host
answers; otherwise the same run is written offline into the run folder (`RUN_DIR/wandb/
offline-run-*`) and the end of the run prints the `wandb sync` command that uploads it. Nothing
here waits on the network for long: the host is probed with a short TCP connect before an
online start, `wandb.init` gets a bounded `init_timeout`, and a failed online start falls back
to offline. `WANDB_MODE=offline` or `WANDB_MODE=disabled` in the environment is honoured.

The mode is passed to `wandb.init` for this run only (`mode=`), never through
`WandbLogger(offline=True)`, which sets `WANDB_MODE` for the whole process (a sweep's later
trials would all be offline).

One run folder is one W&B run: its id is kept in `RUN_DIR/wandb-run-id.txt`, so a resumed
training continues the same W&B run (offline: a second `offline-run-*` folder with the same id;
`wandb sync` takes both). Sweep trials pass `options.wandb_group` (the study name) and land
in one W&B group, each with its parameters in the run config.

What is logged (the module and callbacks log the per-step and per-epoch numbers through
Lightning): training loss and learning rate every step, validation loss, ROC-AUC and PR-AUC every
epoch, global-decay restarts as `events/*` (see `callbacks.history`), the full run configuration
(`config.json`: `options` and `resolved`) as the W&B config, and at the end the per-tag test
metrics as a table and the run's figures as images (`log_run_results`).
"""

from __future__ import annotations

import csv
import math
import netrc
import os
import secrets
import socket
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infrastructure.errors import ConfigError
from infrastructure.io import write_text_atomic

LOGGER_CHOICES = ("wandb", "csv", "tensorboard", "none")
DEFAULT_LOGGER = "wandb"
DEFAULT_PROJECT = "mtat-tagging"
DEFAULT_WANDB_HOST = "https://api.wandb.ai"
RUN_ID_FILE = "wandb-run-id.txt"
PROBE_TIMEOUT_S = 3.0
INIT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WandbMode:
    """How the W&B run will be written, and why."""

    mode: str  # "online", "offline" or "disabled"
    reason: str


# --------------------------------------------------------------------------------------------
# Credentials and mode
# --------------------------------------------------------------------------------------------
def wandb_host(environ: Mapping[str, str] | None = None) -> str:
    """The W&B server URL: `WANDB_BASE_URL`, else https://api.wandb.ai."""
    environ = os.environ if environ is None else environ
    return (environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).rstrip("/")


def _netrc_path(environ: Mapping[str, str]) -> Path:
    if environ.get("NETRC"):
        return Path(environ["NETRC"]).expanduser()
    home = Path(environ.get("HOME") or Path.home())
    unix = home / ".netrc"
    windows = home / "_netrc"
    return windows if (os.name == "nt" and windows.is_file() and not unix.is_file()) else unix


def has_wandb_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """True when an API key is in `WANDB_API_KEY` or a netrc entry for the W&B host has a password."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY", "").strip():
        return True
    path = _netrc_path(environ)
    if not path.is_file():
        return False
    try:
        entries = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError):
        return False
    host = urlsplit(wandb_host(environ)).hostname or ""
    found = entries.authenticators(host)
    return bool(found and found[2])


def host_reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of `url` opens within `timeout_s` seconds."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_wandb_mode(environ: Mapping[str, str] | None = None, probe=host_reachable) -> WandbMode:
    """Online when logged in and the host answers; offline otherwise; `WANDB_MODE` offline/disabled wins."""
    environ = os.environ if environ is None else environ
    forced = environ.get("WANDB_MODE", "").strip().lower()
    if forced in ("offline", "dryrun"):
        return WandbMode("offline", f"WANDB_MODE={forced}")
    if forced == "disabled":
        return WandbMode("disabled", "WANDB_MODE=disabled")
    if not has_wandb_credentials(environ):
        return WandbMode("offline", "not logged in to W&B (no WANDB_API_KEY, no netrc entry for "
                                    f"{urlsplit(wandb_host(environ)).hostname})")
    host = wandb_host(environ)
    if not probe(host):
        return WandbMode("offline", f"{host} cannot be reached")
    return WandbMode("online", "logged in")


# --------------------------------------------------------------------------------------------
# Building and finishing the logger
# --------------------------------------------------------------------------------------------
def _is_rank_zero() -> bool:
    """Global rank zero, also before the Trainer exists (then read from the launcher's environment)."""
    from lightning.pytorch.utilities import rank_zero_only

    node = int(os.environ.get("NODE_RANK") or os.environ.get("GROUP_RANK") or 0)
    has_global_rank = any(os.environ.get(name) for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))
    return getattr(rank_zero_only, "rank", 0) == 0 and (has_global_rank or node == 0)


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run folder (created on first use; kept so a resume continues the run)."""
    path = Path(run_dir) / RUN_ID_FILE
    if path.is_file():
        saved = path.read_text().strip()
        if saved:
            return saved
    run_id = secrets.token_hex(4)
    if _is_rank_zero():
        write_text_atomic(path, run_id + "\n")
    return run_id


def wandb_settings(mode: str):
    """wandb's settings for a run of this suite: a bounded start, and no banner or end-of-run summary.

    `quiet` drops wandb's version line, its "View project" links and the history/summary panel it
    prints when a run finishes. Offline, wandb would still print where the run is saved at the start
    and its sync hint at the end, which the suite's own lines (`build_logger`, `finish_logger`)
    already say: `silent` there. Both concern wandb's printer only: its warnings
    (a step logged out of order, a failed upload) are still shown.
    """
    import wandb

    return wandb.Settings(init_timeout=INIT_TIMEOUT_S, quiet=True, silent=mode == "offline")


def _wandb_logger(options, run_dir: Path, mode: str, config: dict | None):
    from lightning.pytorch.loggers import WandbLogger

    group = options.wandb_group
    logger = WandbLogger(
        name=run_dir.name, save_dir=str(run_dir), id=wandb_run_id(run_dir),
        project=options.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        group=group, job_type="sweep-trial" if group else "train", mode=mode, config=config,
        settings=wandb_settings(mode), log_model=False)
    # Lightning passes `anonymous=None` to wandb.init, which wandb 0.31 answers with a warning that the
    # setting "has no effect": not passing it changes nothing else.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _csv_logger(run_dir: Path, resume_step: int | None):
    """Lightning's CSVLogger in RUN_DIR/logs, which keeps a resumed run's earlier rows.

    Lightning deletes an existing metrics.csv when its writer starts (with a warning the user can do nothing
    about), so a resumed run's log would begin at the resume. Its rows up to the checkpoint's step are put
    back instead (rows after it came from the interrupted part, which the resumed run logs again), and the
    writer is told their columns, so that it appends to them.
    """
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=run_dir, name="logs", version="")
    if not _is_rank_zero():
        return logger
    path = Path(logger.log_dir) / "metrics.csv"
    header, rows = [], []
    if resume_step is not None and path.is_file():
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step", "").isdigit() and int(row["step"]) <= resume_step]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment  # starts the writer: Lightning removes metrics.csv here
    if header:
        text = StringIO(newline="")
        out = csv.DictWriter(text, fieldnames=header)
        out.writeheader()
        out.writerows(rows)
        write_text_atomic(path, text.getvalue())
        writer.metrics_keys = list(header)
    return logger


def build_logger(options, run_dir: Path, config: dict | None = None, resume_step: int | None = None):
    """The Lightning logger `options.logger` asks for (False for "none").

    For W&B the run is started here on global rank zero, so a failed online start falls back to
    offline before training begins; `config` (the run's `config.json` content) becomes the W&B
    run config. `resume_step`: the global step of the checkpoint a resumed run starts from (the CSV log keeps
    its rows up to it).
    """
    kind = options.logger or DEFAULT_LOGGER
    run_dir = Path(run_dir)
    if kind == "none":
        return False
    if kind == "csv":
        return _csv_logger(run_dir, resume_step)
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger
        return TensorBoardLogger(save_dir=run_dir, name="logs", version="")
    if kind != "wandb":
        raise ConfigError(f"unknown logger {kind!r}; choose one of {', '.join(LOGGER_CHOICES)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    choice = choose_wandb_mode()
    logger = _wandb_logger(options, run_dir, choice.mode, config)
    if not _is_rank_zero():
        return logger
    try:
        _ = logger.experiment
    except Exception as error:  # wandb raises its own error types (CommError, UsageError, ...)
        if choice.mode != "online":
            raise
        print(f"W&B: online start failed ({type(error).__name__}: {error}); logging offline instead",
              file=sys.stderr)
        choice = WandbMode("offline", "online start failed")
        import wandb

        wandb.teardown()  # the failed start keeps its run id reserved in wandb's service process
        logger = _wandb_logger(options, run_dir, "offline", config)
        _ = logger.experiment
    if choice.mode == "offline":
        print(f"W&B: logging offline into {run_dir / 'wandb'} ({choice.reason})", file=sys.stderr)
    return logger


def _wandb_loggers(logger) -> list:
    from lightning.pytorch.loggers import WandbLogger

    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    return [item for item in loggers if isinstance(item, WandbLogger)]


def offline_run_dirs(run_dir: Path, run_id: str) -> list[Path]:
    """The offline W&B folders of run `run_id` under `run_dir/wandb`, oldest first."""
    return sorted((Path(run_dir) / "wandb").glob(f"offline-run-*-{run_id}"))


def sync_command(run_dir: Path, run_id: str) -> str | None:
    """`wandb sync ...` for this run's offline folders, or None when there are none."""
    dirs = offline_run_dirs(run_dir, run_id)
    return "wandb sync " + " ".join(str(d) for d in dirs) if dirs else None


def finish_logger(logger, *, failed: bool = False) -> str | None:
    """Close the W&B run (flushes its files; a sweep's next trial starts a new run).

    Prints (one line, on stderr) and returns the `wandb sync` command when the run was written offline. Other loggers
    need nothing here. Safe to call on every rank and more than once.
    """
    command = None
    for item in _wandb_loggers(logger):
        run = item._experiment  # None when never started (other ranks, or already finished)
        if run is None or not _is_rank_zero():
            continue
        mode = getattr(getattr(run, "settings", None), "mode", None)
        run_id, save_dir = run.id, Path(item.save_dir)
        run.finish(exit_code=1 if failed else 0)
        item._experiment = None
        if mode == "offline":
            command = sync_command(save_dir, run_id)
            if command:
                print(f"W&B: logged offline; upload with: {command}", file=sys.stderr, flush=True)
    return command


# --------------------------------------------------------------------------------------------
# End-of-run logging
# --------------------------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def per_tag_table(report) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-tag test metrics (a `TaggingReport`), NaN as None; `threshold_fell_back` as in
    per_tag.csv (None: unknown, or no thresholds)."""
    columns = ["tag", "positives", "roc_auc", "pr_auc", "threshold", "threshold_fell_back", "tpr", "fpr", "evaluable"]
    excluded = set(report.excluded_tags)
    rows = []
    for i, tag in enumerate(report.tag_names):
        def pick(values):
            return None if values is None else _cell(values[i])
        rows.append([tag, int(report.positives[i]), pick(report.per_tag_roc_auc), pick(report.per_tag_pr_auc),
                     pick(report.thresholds), None if report.threshold_fell_back is None else
                     report.threshold_fell_back[i], pick(report.per_tag_tpr), pick(report.per_tag_fpr),
                     tag not in excluded])
    return columns, rows


def log_run_results(logger, report, figures: Mapping[str, Path], summary: Mapping[str, Any] | None = None) -> None:
    """Log the per-tag test table (`test/per_tag`), the figures (`figures/<name>`) and summary values to W&B."""
    for item in _wandb_loggers(logger):
        if not _is_rank_zero():
            continue
        if report is not None:
            columns, rows = per_tag_table(report)
            item.log_table("test/per_tag", columns=columns, data=rows)
        for name, path in figures.items():
            item.log_image(f"figures/{name}", [str(path)], caption=[Path(path).name])
        if summary:
            run = item.experiment
            for key, value in summary.items():
                run.summary[key] = value
