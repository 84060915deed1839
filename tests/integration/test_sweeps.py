"""Optuna sweeps (`run.py --sweep MODEL`): spaces, safe study creation, stale trials, K trials in total,
pruning, reports; and, with real training on tiny synthetic data, concurrent workers, a SIGKILLed
worker, and a rerun that resumes the study.

The worker loop is tested twice: with a stand-in for the training (`run_trial` patched: fast and
exact about counting, failures and interrupts), and end to end with `python run.py --sweep` in
subprocesses (slow).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import run
from experiments.options import RunOptions
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError, RunStopped, SuiteError
from sweeps import leases
from sweeps import study as sweep_study
from sweeps.leases import LEASE, TrialHeartbeat, WorkerId, fail_and_retry, recover_stale_trials
from sweeps.pruning import SweepPruningCallback
from sweeps.report import write_report
from sweeps.spaces import (
    SPACES,
    SearchSpace,
    adapt_to_clip,
    baselines,
    build_space,
    categorical,
    infeasibility,
    log_float,
)
from sweeps.storage import StorageTarget, SweepSettings, open_storage, parse_storage
from sweeps.study import SweepContext, create_or_load_study, make_pruner, make_sampler
from tests.support.helpers import KILL_EPOCHS, TINY_CLIP_SAMPLES, one_torch_thread, run_options, tiny_data_args
from tests.support.paths import REPO_ROOT

MTAT_CLIP = MTAT_CLIP_SAMPLES
SWEEP_CLIPS = 120
# Small enough for a trial of a few seconds on one CPU thread: 16 Mel bands, short sequences.
TINY_SPACE = {"n_fft": [512, 1024], "hop_length": [1024, 2048], "segments_per_clip": [1, 2]}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _options(*extra: str, model: str = "lstm_mel"):
    return run_options(*extra, model=model)


# ---- search spaces ------------------------------------------------------------------------------------
def test_lstm_space_holds_the_papers_settings_on_mtat_and_adapts_to_short_clips():
    options = _options()
    full = build_space("lstm_mel", options, MTAT_CLIP)
    assert full == SPACES["lstm_mel"] and not full.notes  # nothing impossible on 29.1 s clips
    assert {2048} <= set(full.get("n_fft").choices) and {512, 2560} <= set(full.get("hop_length").choices)
    assert {1, 4} <= set(full.get("segments_per_clip").choices)
    papers = baselines(full, options)
    assert {(p["hop_length"], p["segments_per_clip"]) for p in papers} == {(2560, 1), (512, 4)}

    tiny = build_space("lstm_mel", options, TINY_CLIP_SAMPLES)
    assert 2560 not in tiny.get("hop_length").choices and 8 not in tiny.get("segments_per_clip").choices
    assert any("2560 dropped" in note for note in tiny.notes)
    grid = [tiny.get(n).choices for n in ("n_fft", "hop_length", "n_mels", "segments_per_clip")]
    for n_fft in grid[0]:
        for hop in grid[1]:
            for seg in grid[3]:  # every remaining combination trains
                params = {"n_fft": n_fft, "hop_length": hop, "n_mels": 64, "segments_per_clip": seg}
                assert infeasibility("lstm_mel", options, params, TINY_CLIP_SAMPLES) is None, params
    assert infeasibility("lstm_mel", options, {"hop_length": 3072, "segments_per_clip": 8},
                         TINY_CLIP_SAMPLES) is not None


def test_command_line_fixes_options_and_overrides_reshape_the_space():
    options = _options("--n-mels", "32")
    space = build_space("lstm_mel", options, MTAT_CLIP, fixed={"n_mels", "lr"},
                        overrides={"hop_length": [256, 512], "global_decay": None, "local_decay": [0, 1e-6],
                                   "dropout": {"low": 0.0, "high": 0.5}})
    assert space.names == ("n_fft", "hop_length", "segments_per_clip", "local_decay", "dropout")
    assert space.get("hop_length").choices == (256, 512) and space.get("dropout").kind == "float"
    with pytest.raises(ConfigError, match="fixed for all trials"):
        build_space("lstm_mel", options, MTAT_CLIP, fixed={"n_mels"}, overrides={"n_mels": [64]})
    with pytest.raises(ConfigError, match="not a run.py option"):
        build_space("lstm_mel", options, MTAT_CLIP, overrides={"hop": [256]})
    with pytest.raises(ConfigError, match="describes the data"):
        build_space("lstm_mel", options, MTAT_CLIP, overrides={"synthetic_clips": [10, 20]})
    with pytest.raises(ConfigError, match="no combination"):
        adapt_to_clip(SearchSpace("lstm_mel", (categorical("hop_length", (4096,)),)), options, 20_000)


def test_storage_urls(tmp_path):
    folder = tmp_path / "study"
    default = parse_storage(None, folder)
    assert default.kind == "rdb" and default.url == f"sqlite:///{folder}/study.db"
    assert default.lock == folder / "study.db.sweep-lock"  # not ".lock": the journal lock file of Optuna
    journal = parse_storage(f"journal:{tmp_path}/j.log", folder)
    assert journal.kind == "journal" and journal.url == str(tmp_path / "j.log")
    assert parse_storage(f"journal:///{tmp_path}/j.log", folder).url == str(tmp_path / "j.log")
    assert parse_storage("postgresql://u:p@db/optuna", folder) == StorageTarget(
        "rdb", "postgresql://u:p@db/optuna", None)
    assert parse_storage(str(tmp_path / "x.db"), folder).url == f"sqlite:///{tmp_path}/x.db"
    for bad in ("sqlite:///:memory:", "redis://host", "nonsense"):
        with pytest.raises(ConfigError):
            parse_storage(bad, folder)


# ---- study creation --------------------------------------------------------------------------------
RACE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from sweeps.storage import SweepSettings, open_storage, parse_storage
    from sweeps.study import create_or_load_study
    folder, me = Path({folder!r}), int(sys.argv[1])
    (folder.parent / f"ready-{{me}}").touch()
    while len(list(folder.parent.glob("ready-*"))) < {n}:  # start together, once every process has imported
        time.sleep(0.001)
    target = parse_storage(None, folder)
    storage = open_storage(target, SweepSettings())
    study, created = create_or_load_study(storage, target, "race", {{"model": "m", "space": {{}}, "fixed": {{}}}},
                                          [{{"x": 1}}])
    print("created" if created else "loaded")
""")


def test_racing_workers_create_the_study_once(tmp_path):
    """Three processes open a fresh sqlite study at the same instant: all succeed, one creates it."""
    script = RACE.format(repo=str(REPO_ROOT), folder=str(tmp_path / "study"), n=3)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert sorted(out.strip() for out, _ in results) == ["created", "loaded", "loaded"]
    study = optuna.load_study(study_name="race", storage=open_storage(parse_storage(None, tmp_path / "study"),
                                                                        SweepSettings()))
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs["baseline"] == "paper"  # enqueued once


def test_a_study_with_other_settings_is_refused(tmp_path):
    target = parse_storage(f"journal:{tmp_path}/j.log", tmp_path)
    storage = open_storage(target, SweepSettings())
    identity = {"model": "lstm_mel", "space": SPACES["lstm_mel"].to_dict(), "fixed": {"max_epochs": 100}}
    create_or_load_study(storage, target, "s", identity)
    _, created = create_or_load_study(storage, target, "s", identity)
    assert not created
    with pytest.raises(ConfigError, match="max_epochs: 100 vs 5"):
        create_or_load_study(storage, target, "s", dict(identity, fixed={"max_epochs": 5}))
    optuna.create_study(study_name="foreign", storage=storage).enqueue_trial({"x": 1})
    with pytest.raises(ConfigError, match="not created by run.py --sweep"):
        create_or_load_study(storage, target, "foreign", identity)


# ---- the worker loop with a stand-in for training ---------------------------------------------------------
SMALL_SPACE = SearchSpace("lstm_mel", (categorical("hop_length", (256, 512, 1024)), log_float("lr", 1e-3, 1e-1)))


def _context(tmp_path, storage: str | None = "journal", name: str = "s", **settings) -> SweepContext:
    settings = SweepSettings(**{"heartbeat_interval": 1, "grace_period": 2, **settings})
    folder = tmp_path / "sweeps" / name
    target = parse_storage(f"journal:{folder}/journal.log" if storage == "journal" else storage, folder)
    store = open_storage(target, settings)
    identity = {"model": "lstm_mel", "space": SMALL_SPACE.to_dict(), "fixed": {}}
    study, _ = create_or_load_study(store, target, name, identity, (), make_sampler(name, settings),
                                    make_pruner(settings))
    return SweepContext(study, store, target, settings, "lstm_mel", RunOptions(model="lstm_mel"), SMALL_SPACE,
                        TINY_CLIP_SAMPLES, folder,
                        WorkerId.current())


def _fake_training(ctx, trial):
    params = ctx.space.suggest(trial)
    trial.report(params["lr"], 0)
    return params["lr"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_workers_complete_exactly_k_trials_in_total(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_study, "run_trial", _fake_training)
    ctx = _context(tmp_path, trials=3)
    other = _context(tmp_path, trials=3)  # a second worker (own storage object) with a trial in progress
    foreign = other.study.ask()
    foreign_id = leases.trial_id_of(other.storage, other.study, foreign.number)
    TrialHeartbeat(other.storage, foreign_id, foreign.number, 1, WorkerId.current()).beat()  # alive: this process
    outcome = sweep_study.run_worker(ctx)
    assert [state for _, state, _ in outcome.ran] == ["COMPLETE", "COMPLETE"]  # the running trial holds a place
    assert "3 trials" in outcome.stopped
    other.study.tell(foreign, 0.5)
    assert sweep_study.run_worker(ctx).ran == []  # the study is full: a rerun adds nothing
    states = [t.state for t in ctx.study.get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and len(states) == 3

    # a trial asked while another worker took the last place is released, unrun, and requeued if a retry
    bigger = _context(tmp_path, trials=4)
    bigger.study.enqueue_trial({"hop_length": 512, "lr": 0.01})
    extra = bigger.study.ask()
    assert sweep_study._claims_before(bigger.study, extra.number) == 3 < 4
    assert sweep_study._claims_before(bigger.study, extra.number + 1) == 4
    surplus = bigger.study.ask()
    sweep_study._release_surplus(bigger, surplus, leases.trial_id_of(bigger.storage, bigger.study, surplus.number))
    assert bigger.study.trials[surplus.number].state == TrialState.FAIL
    assert bigger.study.trials[surplus.number].user_attrs["surplus"] is True


def test_timeout_stops_starting_trials(tmp_path, monkeypatch):
    def slow(ctx, trial):
        time.sleep(0.1)
        return _fake_training(ctx, trial)

    monkeypatch.setattr(sweep_study, "run_trial", slow)
    outcome = sweep_study.run_worker(_context(tmp_path, trials=10, timeout=0.05))
    assert len(outcome.ran) == 1 and outcome.stopped.startswith("timeout")


def test_sweep_command_line_errors(tmp_path, capsys):
    assert run.main(["--sweep-report", "--study-name", "nope", "--runs-root", str(tmp_path)]) == 2
    assert "no study database" in capsys.readouterr().err
    assert run.main(["--sweep", "lstm_mel", "--devices", "2", "--runs-root", str(tmp_path)]) == 2
    assert "start more workers" in capsys.readouterr().err
    cache = tmp_path / "cache"
    assert run.main(["--sweep", "lstm_mel", "--sweep-space", "{not json", "--runs-root", str(tmp_path),
                     "--cache-dir", str(cache)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not cache.exists()  # refused before the default dataset was generated (once 3 minutes of this test)
    with pytest.raises(SystemExit):
        run.main(["--sweep", "lstm_mel", "--run-dir", str(tmp_path / "x")])
    assert "each trial gets a folder" in capsys.readouterr().err
    from experiments.cli import parse_command

    assert parse_command(["--sweep", "lstm_mel", "--n-mels", "32", "--lr", "0.01"]).given == {"sweep", "n_mels", "lr"}


def test_failing_trials_stop_the_worker_and_an_interrupt_requeues_the_trial(tmp_path, monkeypatch):
    def broken(ctx, trial):
        ctx.space.suggest(trial)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(sweep_study, "run_trial", broken)
    ctx = _context(tmp_path, trials=5, max_failures=2)
    with pytest.raises(SuiteError, match="2 trials in a row failed.*out of memory"):
        sweep_study.run_worker(ctx)
    assert [t.state for t in ctx.study.trials] == [TrialState.FAIL] * 2
    assert "RuntimeError: out of memory" in ctx.study.trials[0].user_attrs["error"]

    def interrupted(ctx, trial):
        ctx.space.suggest(trial)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_study, "run_trial", interrupted)
    ctx = _context(tmp_path, name="i", trials=2)
    with pytest.raises(RunStopped) as stopped:
        sweep_study.run_worker(ctx)
    assert stopped.value.code == 130 and stopped.value.message.startswith(
        "interrupted (Ctrl-C): the study i keeps its finished trials and trial 0 is queued again")
    first = ctx.study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "interrupted"
    monkeypatch.setattr(sweep_study, "run_trial", _fake_training)
    sweep_study.run_worker(ctx)  # the rerun takes the interrupted trial first, with its parameters
    retry = ctx.study.trials[1]
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    assert retry.system_attrs["retry_history"] == [0]
    assert len(ctx.study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_stale_trials_of_a_journal_are_failed_and_retried_once(tmp_path):
    ctx = _context(tmp_path)
    twin = _context(tmp_path)  # another worker looking at the same journal
    trials = [ctx.study.ask() for _ in range(4)]
    for trial in trials:
        ctx.space.suggest(trial)
        trial.report(0.6, 0)
    ids = [leases.trial_id_of(ctx.storage, ctx.study, t.number) for t in trials]
    here = WorkerId.current()
    now = time.time()
    trial_leases = [
        dict(here.lease(0), pid=_dead_pid()),                      # died on this machine: stale at once
        dict(here.lease(1), host="node-b", boot_id="x", beat=now - 100),  # silent elsewhere for 100 s: stale
        dict(here.lease(2), host="node-b", boot_id="x", beat=now),       # beating elsewhere: alive
        here.lease(3),                                               # this live process: alive
    ]
    for trial_id, lease in zip(ids, trial_leases):
        ctx.storage.set_trial_user_attr(trial_id, LEASE, lease)
    assert recover_stale_trials(ctx.storage, ctx.target, ctx.study, ctx.settings) == [0, 1]
    assert recover_stale_trials(twin.storage, twin.target, twin.study, twin.settings) == []  # not twice
    assert fail_and_retry(twin.storage, twin.study, 0, "again", 3) is False  # already failed: no second retry
    by_number = {t.number: t for t in ctx.study.get_trials()}
    assert [by_number[n].state for n in range(4)] == [TrialState.FAIL, TrialState.FAIL,
                                                      TrialState.RUNNING, TrialState.RUNNING]
    assert "is gone" in by_number[0].user_attrs["fail_reason"]
    assert "no heartbeat" in by_number[1].user_attrs["fail_reason"]
    retries = ctx.study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["retry_history"][0] for t in retries) == [0, 1]
    assert all(t.params == by_number[t.system_attrs["retry_history"][0]].params for t in retries)
    assert all(t.intermediate_values == {0: 0.6} for t in retries)  # inherited for a resumed run
    retry = ctx.study.ask()  # the next ask takes a retry before sampling anything new
    assert retry.number in {t.number for t in retries}


def test_rdb_heartbeat_marks_a_silent_trial_stale(tmp_path):
    ctx = _context(tmp_path, storage=None, name="h")  # default: sqlite in the study folder, heartbeats on
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna's hint that heartbeats belong to optimize()
        trial = ctx.study.ask()
    ctx.space.suggest(trial)
    trial_id = leases.trial_id_of(ctx.storage, ctx.study, trial.number)
    lease = dict(WorkerId.current().lease(trial.number), host="node-b", boot_id="x")
    ctx.storage.set_trial_user_attr(trial_id, LEASE, lease)
    ctx.storage.record_heartbeat(trial_id)
    assert recover_stale_trials(ctx.storage, ctx.target, ctx.study, ctx.settings) == []
    time.sleep(3.2)  # the grace period is 2 s
    assert recover_stale_trials(ctx.storage, ctx.target, ctx.study, ctx.settings) == [trial.number]
    [retry] = ctx.study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == ctx.study.trials[0].params and retry.system_attrs["retry_history"] == [0]


# ---- pruning callback -------------------------------------------------------------------------------------
class _Trainer:
    sanity_checking = False

    def __init__(self, metrics):
        self.callback_metrics = metrics


class _Module:
    def __init__(self, epoch):
        self.current_epoch = epoch


def test_pruning_callback_keeps_the_best_value_and_refuses_a_missing_monitor():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    callback = SweepPruningCallback(trial)
    for epoch, value in enumerate([0.6, 0.7, 0.55, float("nan")]):  # a restart rolls back: the best stays
        callback.on_validation_end(_Trainer({"val/roc_auc": torch.tensor(value)}), _Module(epoch))
    assert callback.best == pytest.approx(0.7)
    assert study.trials[0].intermediate_values[1] == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="'val/roc_auc' was not logged.*val/loss"):
        callback.on_validation_end(_Trainer({"val/loss": torch.tensor(0.3)}), _Module(4))


def test_a_retried_trial_validating_a_held_epoch_again_keeps_the_held_value_without_a_warning():
    """A run killed after reporting epoch 1 but before its checkpoint validates epoch 1 again when it resumes."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    trial.report(0.6, step=0)
    trial.report(0.7, step=1)
    callback = SweepPruningCallback(trial, initial_best=0.7, held_steps={0: 0.6, 1: 0.7})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        callback.on_validation_end(_Trainer({"val/roc_auc": torch.tensor(0.7)}), _Module(1))
        callback.on_validation_end(_Trainer({"val/roc_auc": torch.tensor(0.8)}), _Module(2))
    assert study.trials[0].intermediate_values == {0: 0.6, 1: 0.7, 2: pytest.approx(0.8)}
    assert callback.best == pytest.approx(0.8)
    with pytest.warns(UserWarning, match="already reported"):  # an epoch the trial did not hold: Optuna's warning
        SweepPruningCallback(trial).on_validation_end(_Trainer({"val/roc_auc": torch.tensor(0.5)}), _Module(0))


# ---- report ------------------------------------------------------------------------------------------------
def test_report_files(tmp_path):
    ctx = _context(tmp_path, name="r")
    dists = SMALL_SPACE.distributions()
    runs = []
    for i, (value, state) in enumerate([(0.7, TrialState.COMPLETE), (0.8, TrialState.COMPLETE),
                                        (0.5, TrialState.PRUNED), (None, TrialState.FAIL)]):
        run_dir = ctx.folder / "trials" / f"trial-{i:04d}"
        run_dir.mkdir(parents=True)
        runs.append(run_dir)
        ctx.study.add_trial(optuna.create_trial(
            state=state, value=value, params={"hop_length": [256, 512, 1024, 512][i], "lr": 0.01 * (i + 1)},
            distributions=dists, intermediate_values={0: 0.5, 1: value or 0.4},
            user_attrs={"run_dir": str(run_dir), "best_checkpoint": str(run_dir / "best.ckpt"),
                        "test_roc_auc": 0.75, **({"error": "RuntimeError: boom"} if value is None else {})}))
    summary = write_report(ctx.study, ctx.folder)
    assert summary["best"]["number"] == 1 and summary["best"]["params"] == {"hop_length": 512, "lr": 0.02}
    assert summary["counts"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1}
    assert set(summary["importances"]) == {"hop_length", "lr"}
    assert (ctx.folder / "best").resolve() == runs[1].resolve()
    for name in ("history.png", "importance.png", "intermediate.png"):
        assert (ctx.folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (ctx.folder / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value,hop_length,lr,epochs") and len(rows) == 5
    assert "pruned after epoch 1" in rows[3] and "RuntimeError: boom" in rows[4]
    markdown = (ctx.folder / "trials.md").read_text()
    assert "Trial 1: validation ROC-AUC **0.8000**" in markdown and "![Parameter importance]" in markdown
    assert json.loads((ctx.folder / "best_params.json").read_text())["best"]["run_dir"] == str(runs[1])


# ---- end to end: real training on tiny synthetic data ----------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_cache(cache_dir):
    """The session's tiny dataset, generated and decoded before the workers start (they only open it)."""
    options = _options(*tiny_data_args(cache_dir, clips=SWEEP_CLIPS))
    assert sweep_study.dataset_clip_samples(options) == TINY_CLIP_SAMPLES
    return cache_dir


def _sweep_args(cache: Path, runs_root: Path, *extra: str) -> list[str]:
    return ["--sweep", "lstm_mel", *tiny_data_args(cache, clips=SWEEP_CLIPS), "--n-mels", "16",
            "--logger", "csv", "--runs-root", str(runs_root), "--sweep-space", json.dumps(TINY_SPACE), *extra]


def _worker(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled")
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _load(runs_root: Path, name: str, storage: str | None = None) -> optuna.Study:
    target = parse_storage(storage, runs_root / "sweeps" / name)
    return optuna.load_study(study_name=name, storage=open_storage(target, SweepSettings()))


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_rerun_continues_it(sweep_cache, tmp_path, capsys):
    common = ["--study-name", "duo", "--max-epochs", "1", "--pruner", "none"]
    args = _sweep_args(sweep_cache, tmp_path, *common, "--trials", "3")
    outputs = [_finish(p) for p in [_worker(args), _worker(args)]]
    study = _load(tmp_path, "duo")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    counted = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 3
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)  # no real failures
    assert len({t.user_attrs[LEASE]["pid"] for t in counted}) == 2, outputs  # both workers trained
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == 3  # differently seeded samplers
    for trial in counted:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.parent == tmp_path / "sweeps" / "duo" / "trials" and (run_dir / "metrics.json").is_file()
        assert json.loads((run_dir / "sweep_trial.json").read_text())["value"] == pytest.approx(trial.value)

    with one_torch_thread():  # the same command asking for one more trial continues the study
        assert run.main(_sweep_args(sweep_cache, tmp_path, *common, "--trials", "4")) == 0
    out = capsys.readouterr().out
    study = _load(tmp_path, "duo")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4 and len(study.trials) == len(trials) + 1
    assert f"best trial {study.best_trial.number}: val ROC-AUC {study.best_value:.4f}" in out
    report = json.loads((tmp_path / "sweeps" / "duo" / "best_params.json").read_text())
    assert report["counts"]["COMPLETE"] == 4 and report["best"]["number"] == study.best_trial.number
    assert (tmp_path / "sweeps" / "duo" / "best" / "metrics.json").is_file()

    (tmp_path / "sweeps" / "duo" / "trials.md").unlink()  # the report on demand, without training
    assert run.main(["--sweep-report", "--study-name", "duo", "--runs-root", str(tmp_path)]) == 0
    assert "report: " in capsys.readouterr().out and (tmp_path / "sweeps" / "duo" / "trials.md").is_file()


@pytest.mark.slow
def test_a_killed_worker_leaves_a_recoverable_study_and_its_trial_is_retried(sweep_cache, tmp_path, capsys):
    storage = f"journal:{tmp_path}/shared/study.log"
    args = _sweep_args(sweep_cache, tmp_path, "--study-name", "kill", "--trials", "1", "--max-epochs", str(KILL_EPOCHS),
                       "--pruner", "none", "--storage", storage)
    first_run = tmp_path / "sweeps" / "kill" / "trials" / "trial-0000"
    proc = _worker(args)
    deadline = time.time() + 240
    while not (first_run / "checkpoints" / "last.ckpt").is_file():  # killed after its first epoch
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    time.sleep(0.3)  # let Lightning finish writing it: the kill lands in the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (first_run / "metrics.json").exists()
    assert [t.state for t in _load(tmp_path, "kill", storage).trials] == [TrialState.RUNNING]

    with one_torch_thread():  # the same command: recovers the trial and finishes the study
        assert run.main(args) == 0
    assert "trial 0 was stale" in capsys.readouterr().err  # a log line: stderr
    study = _load(tmp_path, "kill", storage)
    killed, retry = study.trials
    assert killed.state == TrialState.FAIL and "is gone" in killed.user_attrs["fail_reason"]
    assert retry.system_attrs["retry_history"] == [0] and retry.params == killed.params
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed"] is True
    assert Path(retry.user_attrs["run_dir"]) == first_run and (first_run / "metrics.json").is_file()


@pytest.mark.slow
def test_a_one_worker_sweep_reruns_to_the_same_trials(sweep_cache, tmp_path):
    """The sampler is seeded per trial from --sweep-seed and the trial number: no pid, no host, no clock
    (the two sweeps run in different processes)."""
    def args(root):
        return _sweep_args(sweep_cache, tmp_path / root, "--study-name", "again", "--trials", "3", "--max-epochs", "1",
                           "--pruner", "none", "--sweep-seed", "7")

    with one_torch_thread():
        assert run.main(args("first")) == 0
    _finish(_worker(args("second")))
    studies = [_load(tmp_path / root, "again") for root in ("first", "second")]
    first, second = ([t for t in study.trials if t.state == TrialState.COMPLETE] for study in studies)
    assert len(first) == len(second) == 3
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == [t.value for t in second]  # and training is deterministic too
    assert [t.user_attrs["sampler_seed"] for t in first] == [
        sweep_study.trial_seed("again", 7, t.number) for t in first]


@pytest.mark.slow
def test_median_pruner_prunes_a_trial_below_the_median(sweep_cache, tmp_path, capsys):
    options = _options(*tiny_data_args(sweep_cache, clips=SWEEP_CLIPS), "--n-mels", "16", "--max-epochs", "3",
                       "--logger", "csv", "--runs-root", str(tmp_path))
    settings = SweepSettings(trials=2, study_name="prune", pruner="median", pruner_startup_trials=1,
                             sweep_space=json.dumps(TINY_SPACE))
    with one_torch_thread():
        ctx = sweep_study.prepare_sweep(options, settings, fixed={"n_mels"})
        point = {name: (p.choices[0] if p.kind == "categorical" else p.low) for name, p in
                 zip(ctx.space.names, ctx.space.params)}
        ctx.study.add_trial(optuna.create_trial(  # an excellent earlier trial: the median to beat
            params=point, distributions=ctx.space.distributions(), value=0.99,
            intermediate_values={0: 0.99, 1: 0.99, 2: 0.99}))
        outcome = sweep_study.run_worker(ctx)
    assert [state for _, state, _ in outcome.ran] == ["PRUNED"]
    pruned = ctx.study.trials[1]
    assert list(pruned.intermediate_values) == [0] and pruned.intermediate_values[0] < 0.99
    assert not (Path(pruned.user_attrs["run_dir"]) / "metrics.json").exists()  # stopped before testing
    # its line says where it stopped and at what value
    value = pruned.intermediate_values[0]
    assert (f"sweep: trial 1 pruned after epoch 1 (val/roc_auc {value:.4f}, below the median)"
            in capsys.readouterr().err)
