"""Optuna sweeps: `python run.py --sweep MODEL` runs one worker of a persistent, shared study.

A worker repeats: recover stale trials, stop if the study has its `--trials`, ask a trial, train
it (`run_experiment` with the trial's parameters and a pruning callback), tell the result. Any
number of workers, on one machine or many, may point at the same storage; each trial is an
ordinary run folder under the study's folder, `<runs_root>/sweeps/<study>/trials/trial-NNNN`.

Storage (`--storage`)
    default: `sqlite:///<runs_root>/sweeps/<study>/study.db` (one machine; rerunning the same
    command continues the study). `postgresql://user:pw@host/db` (or any SQLAlchemy URL) for
    a cluster (the `postgres` extra; driver check, start-up lock and lost connections in
    sweeps/database.py); `journal:/shared/path/study.log` for a journal file on a shared file system.
    Creating the storage and the study is safe with racing workers: file storages are created
    under an fcntl lock beside the file, and every RDB operation of the start-up is retried on
    the database errors a race produces (measured: two workers racing `create_study` on a new
    sqlite file crashed one of them 5 times out of 5; "table studies already exists" and
    "UNIQUE constraint failed: alembic_version").

Exactly `--trials` K trials in total
    A trial counts when it is COMPLETE or PRUNED, and claims a place while RUNNING. A worker
    stops asking once K places are claimed. Two workers may still ask at the same moment; the
    trial that finds K claims with smaller numbers than its own is surplus: it is failed at once,
    marked `surplus`, and (if it was a retry) queued again. Failed trials (errors, impossible
    parameters, killed workers) do not count, so the study ends with exactly K counted trials.

Workers differ, reruns do not
    Each trial's parameters come from a TPE sampler seeded from the study name, `--sweep-seed`
    and the trial's number (`trial_seed`). Numbers are unique across workers, so no two workers
    draw from one random stream (same seeds proposed the same parameters, measured), and a
    one-worker sweep rerun from scratch proposes the same trials. TPE runs with its constant
    liar, so running trials repel new proposals.

Killed workers (SIGKILL, node loss, SLURM time limit)
    Every running trial carries a lease (user attribute `sweep_worker`: host, boot id, pid and
    its start time, last beat) refreshed every `--heartbeat-interval` seconds by a thread; RDB
    storages also get Optuna's own heartbeat (`RDBStorage(heartbeat_interval, grace_period,
    RetryHeartbeatStaleTrialCallback)`). Before each trial a worker fails stale trials: those
    whose worker process is gone (same host: immediately), whose heartbeat is older than
    `--grace-period` (Optuna's for RDB; the lease beat for journal files, which have no heartbeat
    in Optuna 5), or that never got a lease. A failed stale trial is queued again (same
    parameters, its reported values inherited, up to `--max-retry` times); the retry resumes
    the original run folder from its `last.ckpt` when its configuration matches. Ctrl-C and
    SIGTERM (Lightning raises SystemExit on it) fail the running trial and queue it again at
    once, so rerunning the command resumes it.

Objective and pruning
    The best validation macro ROC-AUC of the trial (`val/roc_auc`, reported after every
    validation epoch; the maximum, since GlobalDecayRestart can roll weights back). Pruning:
    optuna-integration's `PyTorchLightningPruningCallback` (MedianPruner by default), wrapped so
    that a missing monitor is an error instead of a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from experiments.data import prepare_data_once
from experiments.options import NON_IDENTITY_OPTIONS, RunOptions, SweepOptions
from experiments.resolve import build_datamodule, resolve
from experiments.run_folder import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT
from experiments.train import run_experiment
from infrastructure.errors import ConfigError, DataError, RunStopped, SuiteError
from infrastructure.io import try_file_lock, write_json_atomic
from sweeps.database import DatabaseUnreachable, server_lock
from sweeps.leases import TrialHeartbeat, WorkerId, recover_stale_trials, retry_trial, trial_id_of
from sweeps.plan import (
    StudyPlan,
    SweepProgress,
    describe_study,
    jsonable,
    plan_study,
    say,
    single_process,
)
from sweeps.pruning import OBJECTIVE, SweepPruningCallback
from sweeps.report import write_report
from sweeps.spaces import SearchSpace, baselines, infeasibility
from sweeps.storage import StorageTarget, file_lock, open_storage, parse_storage, retrying, study_dir

STUDY_ATTR = "sweep"
TRIAL_RECORD = "sweep_trial.json"
CLAIMS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

SweepSettings = SweepOptions  # how a worker runs the study: run.py's sweep option group


def trial_seed(study_name: str, base_seed: int, trial_number: int) -> int:
    """The sampler seed of one trial: a function of the study, `--sweep-seed` and the trial's number.

    Trial numbers are unique across the workers of a study (the storage hands them out), so
    concurrent workers never draw from the same random stream (the same seed in two workers
    gives duplicate trials), and a one-worker sweep rerun from scratch samples the same trials.
    """
    parts = [study_name, str(base_seed), str(trial_number)]
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:4], "little")


def make_pruner(settings: SweepSettings) -> optuna.pruners.BasePruner:
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials,
                                       n_warmup_steps=settings.pruner_warmup_epochs)


def make_sampler(study_name: str, settings: SweepSettings, trial_number: int = -1) -> optuna.samplers.BaseSampler:
    """TPE (constant liar: a running trial counts as a bad result, so workers spread out), seeded
    for `trial_number` (`trial_seed`); the worker swaps in a fresh one for each trial it runs."""
    return optuna.samplers.TPESampler(seed=trial_seed(study_name, settings.sweep_seed, trial_number),
                                      constant_liar=True)


def create_or_load_study(storage, target: StorageTarget, name: str, identity: dict, first_trials=(),
                         sampler=None, pruner=None) -> tuple[optuna.Study, bool]:
    """Load study `name`, creating it (with `identity` and `first_trials` enqueued) if it is new.

    Safe with racing workers: file storages are serialised by a lock beside the file; RDB
    errors from racing creations are retried. A study this suite did not create, or one created
    with another model, space or fixed options, is refused with ConfigError.
    Returns (study, created).
    """
    def load_or_create():
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
        except KeyError:
            return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                       direction="maximize", load_if_exists=True), True

    with file_lock(target.lock), server_lock(target.url if target.kind == "rdb" else None):
        study, created = retrying(load_or_create, f"creating study {name!r} in {target.describe()}")
        stored = study.user_attrs.get(STUDY_ATTR)
        if stored is None:
            if study.get_trials(deepcopy=False) or study.direction != optuna.study.StudyDirection.MAXIMIZE:
                raise ConfigError(f"study {name!r} in {target.describe()} was not created by run.py --sweep; "
                                  "pick another --study-name")
            study.set_user_attr(STUDY_ATTR, identity)
            for params in first_trials:
                study.enqueue_trial(params, user_attrs={"baseline": "paper"}, skip_if_exists=True)
            created = True
            stored = study.user_attrs.get(STUDY_ATTR)
    if stored != identity:
        raise ConfigError(f"study {name!r} was created with other settings ({_identity_diff(stored, identity)}); "
                          "rerun it with the same options, or pick another --study-name")
    return study, created


def _identity_diff(stored: dict, mine: dict) -> str:
    out = []
    if stored.get("model") != mine.get("model"):
        out.append(f"model {stored.get('model')} vs {mine.get('model')}")
    if stored.get("space") != mine.get("space"):
        out.append(f"search space {SearchSpace.from_dict(stored['space']).describe()} vs "
                   f"{SearchSpace.from_dict(mine['space']).describe()}")
    a, b = stored.get("fixed", {}), mine.get("fixed", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} vs {b.get(key)!r}")
    return "; ".join(out) or "unknown difference"


# ---- the trial -------------------------------------------------------------------------------------------
class InfeasibleTrial(ConfigError):
    """The trial's parameters cannot train on this dataset (it fails before training)."""


def _same_config(run_dir: Path, options: RunOptions) -> bool:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return True
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    mine = jsonable(options.to_dict())
    keys = (set(saved) | set(mine)) - set(NON_IDENTITY_OPTIONS) - {"resolved"}
    return all(saved.get(k) == mine.get(k) for k in keys)


@dataclass
class TrialFolder:
    path: Path
    lock: object
    resumed: bool = False
    record: dict | None = None


def claim_trial_folder(trials_root: Path, number: int, root: int, options: RunOptions, params: dict) -> TrialFolder:
    """The run folder of trial `number` (a retry of trial `root`), locked against concurrent use.

    A retry takes its original's folder when nobody holds it and its configuration matches:
    it resumes from `last.ckpt`, or reuses the recorded result of a run that finished but was
    never told. Otherwise the trial gets a fresh folder.
    """
    candidates = [trials_root / f"trial-{root:04d}"]
    if root != number:
        candidates.append(trials_root / f"trial-{number:04d}")
    candidates += [trials_root / f"trial-{number:04d}-{k}" for k in range(1, 100)]
    for path in candidates:
        lock = try_file_lock(path / ".sweep.lock")
        if lock is None:
            continue
        if (path / "metrics.json").is_file():
            record = _read_record(path)
            if record is not None and record.get("params") == jsonable(params) and _same_config(path, options):
                return TrialFolder(path, lock, record=record)
            lock.release()
            continue
        if not _same_config(path, options):
            lock.release()
            continue
        return TrialFolder(path, lock, resumed=(path / CHECKPOINT_DIR / LAST_CHECKPOINT).is_file())
    raise DataError(f"no usable run folder for trial {number} under {trials_root}")


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads((path / TRIAL_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("value"), (int, float)) else None


@dataclass
class SweepContext:
    """What every trial of this worker shares."""

    study: optuna.Study
    storage: object
    target: StorageTarget
    settings: SweepSettings
    model: str
    options: RunOptions
    space: SearchSpace
    clip_samples: int
    folder: Path
    worker: WorkerId
    progress: SweepProgress | None = None  # what this worker says of the study's progress (None: nothing)


def run_trial(ctx: SweepContext, trial: optuna.Trial) -> float:
    """Train one trial; return its best validation ROC-AUC (raises TrialPruned, InfeasibleTrial, ...)."""

    params = ctx.space.suggest(trial)
    reason = infeasibility(ctx.model, ctx.options, params, ctx.clip_samples)
    if reason:
        raise InfeasibleTrial(f"parameters {params} cannot train on {ctx.clip_samples}-sample clips: {reason}")
    frozen = ctx.storage.get_trial(trial_id_of(ctx.storage, ctx.study, trial.number))
    history = frozen.system_attrs.get("retry_history") or []
    root = history[0] if history else trial.number
    options = ctx.options.replace(**params, wandb_group=ctx.study.study_name)
    folder = claim_trial_folder(ctx.folder / "trials", trial.number, root, options, params)
    try:
        trial.set_user_attr("run_dir", str(folder.path))
        if folder.record is not None:
            _set_result_attrs(trial, folder.record)
            trial.set_user_attr("reused_result_of", root)
            return float(folder.record["value"])
        inherited = [v for v in frozen.intermediate_values.values() if math.isfinite(v)] if folder.resumed else []
        trial.set_user_attr("resumed", folder.resumed)
        callback = SweepPruningCallback(trial, OBJECTIVE, max(inherited) if inherited else None,
                                        held_steps=frozen.intermediate_values if folder.resumed else ())
        outcome = run_experiment(options.replace(run_dir=str(folder.path)),
                                 extra_callbacks=(callback, *([FirstEpochTimer(ctx.progress.first_epoch)]
                                                              if ctx.progress else [])))
        if callback.best is None:
            raise SuiteError(f"trial {trial.number} reported no finite {OBJECTIVE}")
        record = {"study": ctx.study.study_name, "trial": trial.number, "params": jsonable(params),
                  "value": callback.best, "reported": {str(k): v for k, v in sorted(callback.reported.items())},
                  "best_checkpoint": str(outcome.best_checkpoint) if outcome.best_checkpoint else None,
                  "test_roc_auc": (outcome.metrics or {}).get("roc_auc"),
                  "epochs": (outcome.metrics or {}).get("epochs")}
        write_json_atomic(folder.path / TRIAL_RECORD, _finite(record))
        _set_result_attrs(trial, record)
        return callback.best
    finally:
        folder.lock.release()


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _set_result_attrs(trial, record: dict) -> None:
    for key in ("best_checkpoint", "test_roc_auc", "epochs"):
        if record.get(key) is not None:
            trial.set_user_attr(key, record[key])


class FirstEpochTimer(Callback):
    """Calls `report(seconds)` once, when the trial's first epoch (training and validation) has ended."""

    def __init__(self, report) -> None:
        self.report, self.started = report, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.report is not None and self.started is not None:
            self.report(time.monotonic() - self.started)
            self.report = None


# ---- the worker loop --------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    study_name: str
    folder: Path
    storage: str
    ran: list = field(default_factory=list)  # (number, state name, value) of this worker's trials
    stopped: str = ""
    report: dict = field(default_factory=dict)


def _claims_before(study: optuna.Study, number: int) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=CLAIMS) if t.number < number)


def run_worker(ctx: SweepContext, log=say) -> SweepOutcome:
    """Run trials until the study has `settings.trials` counted trials or the timeout passes."""
    settings = ctx.settings
    outcome = SweepOutcome(ctx.study.study_name, ctx.folder, ctx.target.describe())
    started = time.monotonic()
    failures = 0
    while True:
        if settings.timeout is not None and time.monotonic() - started > settings.timeout:
            outcome.stopped = f"timeout of {settings.timeout:g} s reached"
            break
        for number in recover_stale_trials(ctx.storage, ctx.target, ctx.study, settings, ctx.worker):
            log(f"sweep: trial {number} was stale (its worker is gone); failed it and queued it again")
        claims = len(ctx.study.get_trials(deepcopy=False, states=CLAIMS))
        if claims >= settings.trials:
            outcome.stopped = f"the study has its {settings.trials} trials (finished or running)"
            break
        with warnings.catch_warnings():  # Optuna expects heartbeats only under Study.optimize; this loop beats itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = ctx.study.ask()
        # Parameters are drawn by the suggest calls of the trial, after this: from a sampler seeded
        # for this trial number (the sampler does not sample at ask time: TPE's relative space is empty).
        ctx.study.sampler = make_sampler(ctx.study.study_name, settings, trial.number)
        trial_id = trial_id_of(ctx.storage, ctx.study, trial.number)
        ctx.storage.set_trial_user_attr(trial_id, "sampler_seed",
                                        trial_seed(ctx.study.study_name, settings.sweep_seed, trial.number))
        if _claims_before(ctx.study, trial.number) >= settings.trials:
            _release_surplus(ctx, trial, trial_id)
            continue
        state, value, error = _run_one(ctx, trial, trial_id)
        outcome.ran.append((trial.number, state.name, value))
        if state == TrialState.FAIL:
            failures += 1
            if failures >= settings.max_failures:
                outcome.stopped = f"{failures} trials in a row failed"
                raise SuiteError(f"sweep stopped: {failures} trials in a row failed; last: {error}") from None
        else:
            failures = 0
    return outcome


def _release_surplus(ctx: SweepContext, trial: optuna.Trial, trial_id: int) -> None:
    """A trial asked while another worker took the last place: fail it unrun, requeue it if it was a retry."""
    ctx.storage.set_trial_user_attr(trial_id, "surplus", True)
    ctx.study.tell(trial, state=TrialState.FAIL)
    frozen = ctx.storage.get_trial(trial_id)
    if frozen.system_attrs.get("retry_history") or frozen.user_attrs.get("baseline"):
        retry_trial(ctx.study, frozen, None)


def _outcome(ctx: SweepContext, trial_id: int, state: TrialState, value: float | None) -> str:
    """How a trial ended, for its line: its best objective, or where it was pruned and at what value."""
    if state == TrialState.PRUNED:
        reported = ctx.storage.get_trial(trial_id).intermediate_values  # epoch (from 0) -> objective
        if reported:
            epoch = max(reported)
            return f"pruned after epoch {epoch + 1} ({OBJECTIVE} {reported[epoch]:.4f}, below the median)"
    shown = f"{value:.4f}" if value is not None else "n/a"
    return f"{state.name.lower()} (best {OBJECTIVE} {shown})"


def _run_one(ctx: SweepContext, trial: optuna.Trial, trial_id: int):
    """Run and tell one trial; returns (state, value, error). Interrupts fail it, queue it again, re-raise."""
    value, error, state = None, None, TrialState.COMPLETE
    started = time.monotonic()
    heartbeat = TrialHeartbeat(ctx.storage, trial_id, trial.number, ctx.settings.heartbeat_interval, ctx.worker)
    with heartbeat:
        try:
            value = run_trial(ctx, trial)
        except optuna.TrialPruned as pruned:
            state, error = TrialState.PRUNED, pruned
        except UpdateFinishedTrialError as lost:
            state, error = None, lost
        except DatabaseUnreachable:  # one line from run.py; the trial keeps its lease and checkpoints
            raise
        except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM in training (Lightning: SystemExit)
            if _tell(ctx, trial, TrialState.FAIL, None, "interrupted") == TrialState.FAIL:
                retry_trial(ctx.study, ctx.storage.get_trial(trial_id), None)
            kept = (f"the study {ctx.study.study_name} keeps its finished trials and trial {trial.number} is queued "
                    "again, to resume from its last checkpoint: rerun the same command to continue")
            code = getattr(stop, "code", None)
            if isinstance(stop, SystemExit) and code in (None, 128 + signal.SIGTERM):  # Lightning's SIGTERMException
                raise RunStopped(f"stopped (SIGTERM): {kept}", 128 + signal.SIGTERM) from None
            if isinstance(stop, KeyboardInterrupt) or code == 128 + signal.SIGINT:
                raise RunStopped(f"interrupted (Ctrl-C): {kept}", 128 + signal.SIGINT) from None
            raise
        except Exception as failure:  # one bad trial must not end the sweep; see max_failures
            state, error = TrialState.FAIL, failure
            _record_error(ctx, trial_id, failure)
    if state is None or heartbeat.lost:
        print(f"sweep: trial {trial.number} was declared stale by another worker and retried there; "
              "this result is dropped", file=sys.stderr)
        return TrialState.FAIL, None, error
    told = _tell(ctx, trial, state, value, None)
    if told is None:
        print(f"sweep: trial {trial.number} was failed by another worker meanwhile; this result is dropped",
              file=sys.stderr)
        return TrialState.FAIL, None, error
    say(f"sweep: trial {trial.number} {_outcome(ctx, trial_id, told, value)} {trial.params}"
        + (f": {error}" if state == TrialState.FAIL else ""))
    if ctx.progress is not None:
        counted = ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        best = max((t.value for t in counted if t.state == TrialState.COMPLETE and t.value is not None), default=None)
        ctx.progress.trial_done(len(counted), time.monotonic() - started, best)
    return told, value, error


def _tell(ctx: SweepContext, trial, state: TrialState, value, reason: str | None) -> TrialState | None:
    try:
        if reason:
            trial.set_user_attr("fail_reason", reason)
        if state == TrialState.COMPLETE:
            ctx.study.tell(trial, value)
        else:
            ctx.study.tell(trial, state=state)
    except UpdateFinishedTrialError:  # another worker declared it stale and failed it meanwhile
        return None
    return state


def _record_error(ctx: SweepContext, trial_id: int, error: BaseException) -> None:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    with contextlib.suppress(Exception):
        ctx.storage.set_trial_user_attr(trial_id, "error", f"{type(error).__name__}: {error}"[:2000])
        run_dir = ctx.storage.get_trial(trial_id).user_attrs.get("run_dir")
        if run_dir:
            (Path(run_dir) / "error.txt").write_text(text)
    print(text, file=sys.stderr)


# ---- entry points -----------------------------------------------------------------------------------------------
def dataset_clip_samples(options: RunOptions) -> int:
    """Clip length of the options' dataset, preparing it once as a run would (workers started later only open it)."""
    return prepare_data_once(_datamodule(options)).clip_samples


def _datamodule(options: RunOptions):
    """The options' data module, unprepared: its reader knows the clip length before any data work."""
    return build_datamodule(resolve(options))


def prepare_sweep(options: RunOptions, settings: SweepSettings, fixed=(), log=say,
                  plan: StudyPlan | None = None) -> SweepContext:
    """Everything before the first trial: space and study (said before the data work, unless `plan` is the one
    already said), storage, data."""
    if plan is None:
        plan = plan_study(options, settings, fixed)
        for line in describe_study(plan):
            log(line)
    options = single_process(options)
    model, space, name, target = options.model, plan.space, plan.name, plan.target
    folder = study_dir(options.runs_root, name)
    datamodule = _datamodule(options)
    clip_samples = plan.clip_samples
    identity = plan.identity
    storage = open_storage(target, settings)
    study, _ = create_or_load_study(storage, target, name, identity, baselines(space, options),
                                    make_sampler(name, settings), make_pruner(settings))
    folder.mkdir(parents=True, exist_ok=True)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done:
        log(f"  resumed  the study has {done} of its {settings.trials} trials already")
    prepare_data_once(datamodule)
    progress = SweepProgress(settings.trials, options.max_epochs, done_before=done)
    return SweepContext(study, storage, target, settings, model, options, space, clip_samples, folder,
                        WorkerId.current(), progress)


def run_sweep(options: RunOptions, settings: SweepOptions, fixed=(), log=say,
              plan: StudyPlan | None = None) -> SweepOutcome:
    """`run.py --sweep MODEL`: one worker of the study, then the study's report.

    `options`: the training options every trial shares (run.py's, without the sweep group);
    `settings`: run.py's sweep group; `fixed`: the option names given on the command line or in
    --config files, which leave the search space.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "Trial N finished ..." lines: the worker says its own
    training = options
    if settings.sweep_report:
        return report_only(training, settings, fixed, log)
    ctx = prepare_sweep(training, settings, fixed, plan=plan)
    outcome = run_worker(ctx, log)
    log(f"sweep: worker stops: {outcome.stopped}")
    outcome.report = write_report(ctx.study, ctx.folder)
    return outcome


def report_only(options: RunOptions, settings: SweepSettings, fixed=(), log=say) -> SweepOutcome:
    """`--sweep-report`: the report of an existing study, no training."""
    if settings.study_name:
        name = settings.study_name
    else:
        if not options.model:
            raise ConfigError("--sweep-report needs --study-name NAME, or the --sweep command of the study")
        name = plan_study(options, settings, fixed).name
    folder = study_dir(options.runs_root, name)
    target = parse_storage(settings.storage, folder)
    if target.kind == "rdb" and target.url.startswith("sqlite:///") and not Path(target.url[10:]).is_file():
        raise DataError(f"no study database at {target.url[10:]}; is --runs-root or --study-name right?")
    storage = open_storage(target, settings)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise DataError(f"no study named {name!r} in {target.describe()}") from None
    outcome = SweepOutcome(name, folder, target.describe(), stopped="report only")
    outcome.report = write_report(study, folder)
    return outcome
