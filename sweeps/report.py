"""The report of a sweep, written into the study's folder at the end of every worker and by `--sweep-report`.

Files (all replaced atomically, so a reader never sees half of one; several workers finishing
together take turns under a lock):

* `best_params.json`: the best trial (number, best validation ROC-AUC, parameters, run folder,
  best checkpoint, test ROC-AUC), trial counts by state, parameter importances.
* `trials.csv` and `trials.md`: one row per trial: state, objective, parameters, epochs
  reported, duration, retry lineage, run folder, test ROC-AUC, and why it failed if it did.
* `history.png` (objective per trial and best so far), `intermediate.png` (validation ROC-AUC
  per epoch of every trial: what the pruner saw), `importance.png` (fANOVA importances; needs
  two finished trials).
* `best`: a symbolic link to the best trial's run folder (its `checkpoints/best-*.ckpt` is the
  model to keep; `results.md` there has its test scores).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from infrastructure.io import atomic_path, file_lock, write_json_atomic, write_text_atomic

FIXED_COLUMNS = ("number", "state", "value")
TAIL_COLUMNS = ("epochs", "duration_s", "retry_of", "test_roc_auc", "run_dir", "note")


def _note(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    notes = []
    if attrs.get("baseline"):
        notes.append(f"{attrs['baseline']} settings")
    if attrs.get("resumed"):
        notes.append("resumed its original's checkpoint")
    if trial.state == TrialState.FAIL:  # a retry inherits its original's attributes: only failures explain these
        if attrs.get("surplus"):
            notes.append("surplus (another worker took the last place); not run")
        if attrs.get("fail_reason"):
            notes.append(str(attrs["fail_reason"]))
        if attrs.get("error"):
            notes.append(str(attrs["error"]).splitlines()[0][:200])
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        notes.append(f"pruned after epoch {max(trial.intermediate_values)}")
    return "; ".join(notes)


def trial_rows(study: optuna.Study) -> tuple[list[str], list[dict]]:
    """Column names and one dict per trial (in trial-number order)."""
    trials = study.get_trials(deepcopy=False)
    param_names: list[str] = []
    for trial in trials:
        for name in trial.params:
            if name not in param_names:
                param_names.append(name)
    rows = []
    for trial in trials:
        history = trial.system_attrs.get("retry_history") or []
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        row = {"number": trial.number, "state": trial.state.name, "value": trial.value,
               **{name: trial.params.get(name) for name in param_names},
               "epochs": len(trial.intermediate_values) or None, "duration_s": duration,
               "retry_of": history[0] if history else None, "test_roc_auc": trial.user_attrs.get("test_roc_auc"),
               "run_dir": trial.user_attrs.get("run_dir"), "note": _note(trial)}
        rows.append(row)
    return [*FIXED_COLUMNS, *param_names, *TAIL_COLUMNS], rows


def trials_csv(columns: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return out.getvalue()


def _md_cell(value) -> str:
    if isinstance(value, float):
        text = "nan" if not math.isfinite(value) else (f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}")
    else:
        text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def state_counts(study: optuna.Study) -> dict:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return {k: v for k, v in counts.items() if v}


def best_summary(study: optuna.Study) -> dict | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = max(complete, key=lambda t: t.value)
    return {"number": best.number, "value": best.value, "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"), "best_checkpoint": best.user_attrs.get("best_checkpoint"),
            "test_roc_auc": best.user_attrs.get("test_roc_auc"), "epochs": best.user_attrs.get("epochs")}


def param_importances(study: optuna.Study) -> tuple[dict | None, str | None]:
    """fANOVA importances of the tuned parameters (seeded), or (None, why not)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"needs at least 2 complete trials, has {len(complete)}"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), None
    except (ValueError, RuntimeError) as error:
        return None, str(error)


def _save_figure(axes, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
    figure.set_size_inches(8, 4.5)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(figure)


def write_plots(study: optuna.Study, folder: Path, importances: dict | None) -> dict:
    """history.png, intermediate.png, importance.png (those the study has data for) -> {name: path}."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from optuna.visualization import matplotlib as plots

    written = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        if complete:
            axes = plots.plot_optimization_history(study, target_name="best val macro ROC-AUC")
            _save_figure(axes, folder / "history.png")
            written["history"] = folder / "history.png"
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            axes = plots.plot_intermediate_values(study)
            axes.set_ylabel("val macro ROC-AUC")
            axes.set_xlabel("epoch")
            _save_figure(axes, folder / "intermediate.png")
            written["intermediate"] = folder / "intermediate.png"
        if importances:
            axes = plots.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                target_name="best val macro ROC-AUC")
            _save_figure(axes, folder / "importance.png")
            written["importance"] = folder / "importance.png"
    return written


def _link_best(folder: Path, run_dir: str | None) -> Path | None:
    if not run_dir or not Path(run_dir).is_dir():
        return None
    link = folder / "best"
    target = Path(run_dir)
    with_rel = os.path.relpath(target, folder) if target.is_relative_to(folder) else str(target)
    tmp = folder / f".best.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(with_rel, target_is_directory=True)
    os.replace(tmp, link)
    return link


def trials_markdown(study: optuna.Study, columns: list[str], rows: list[dict], best: dict | None,
                    importances: dict | None, importance_note: str | None, plots: dict) -> str:
    attrs = study.user_attrs.get("sweep", {})
    space = attrs.get("space", {}).get("params", [])
    counts = ", ".join(f"{n} {s.lower()}" for s, n in state_counts(study).items()) or "no trials yet"
    lines = [f"# Sweep {study.study_name}", "",
             f"Model `{attrs.get('model', '?')}`; objective: best validation macro ROC-AUC of each trial "
             f"(maximised). Trials: {counts}.", ""]
    if best:
        lines += ["## Best trial", "",
                  f"Trial {best['number']}: validation ROC-AUC **{best['value']:.4f}**"
                  + (f", test ROC-AUC {best['test_roc_auc']:.4f}" if best.get("test_roc_auc") is not None else "")
                  + ".", "", "| parameter | value |", "|---|---|"]
        lines += [f"| {k} | {_md_cell(v)} |" for k, v in best["params"].items()]
        lines += ["", f"Run folder: `{best['run_dir']}`", f"Best checkpoint: `{best['best_checkpoint']}`", ""]
    else:
        lines += ["No complete trial yet.", ""]
    if space:
        lines += ["## Search space", ""]
        for param in space:
            if param["kind"] == "categorical":
                lines.append(f"- `{param['name']}`: one of {param['choices']}")
            else:
                lines.append(f"- `{param['name']}`: {'log-' if param.get('log') else ''}uniform {param['kind']} "
                             f"in [{param['low']}, {param['high']}]")
        lines.append("")
    lines += ["## Parameter importance (fANOVA)", ""]
    if importances:
        lines += ["| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importances.items()]
    else:
        lines.append(f"Not computed: {importance_note}.")
    lines += ["", "## Trials", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(row.get(c)) for c in columns) + " |")
    lines.append("")
    for name, title in (("history", "Optimization history"), ("intermediate", "Validation ROC-AUC per epoch"),
                        ("importance", "Parameter importance")):
        if name in plots:
            lines += [f"![{title}]({plots[name].name})", ""]
    return "\n".join(lines)


def write_report(study: optuna.Study, folder: str | Path) -> dict:
    """Write every report file into `folder`; returns what best_params.json holds plus the file paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".report.lock"):
        columns, rows = trial_rows(study)
        best = best_summary(study)
        importances, why_not = param_importances(study)
        plots = write_plots(study, folder, importances)
        link = _link_best(folder, best["run_dir"]) if best else None
        write_text_atomic(folder / "trials.csv", trials_csv(columns, rows))
        write_text_atomic(folder / "trials.md",
                          trials_markdown(study, columns, rows, best, importances, why_not, plots))
        summary = {"study": study.study_name, "model": study.user_attrs.get("sweep", {}).get("model"),
                   "objective": "best validation macro ROC-AUC (val/roc_auc), maximised",
                   "best": best, "counts": state_counts(study), "importances": importances,
                   "files": {"trials_csv": str(folder / "trials.csv"), "trials_md": str(folder / "trials.md"),
                             **{k: str(v) for k, v in plots.items()},
                             **({"best_run": str(link)} if link else {})}}
        write_json_atomic(folder / "best_params.json", json.loads(json.dumps(summary, default=str)))
    return summary


def format_summary(summary: dict) -> str:
    """The lines run.py prints at the end of a sweep."""
    counts = ", ".join(f"{n} {s.lower()}" for s, n in summary["counts"].items()) or "no trials"
    lines = [f"study {summary['study']}: {counts}"]
    best = summary.get("best")
    if best:
        test = f", test ROC-AUC {best['test_roc_auc']:.4f}" if best.get("test_roc_auc") is not None else ""
        lines += [f"best trial {best['number']}: val ROC-AUC {best['value']:.4f}{test}",
                  f"best parameters: {json.dumps(best['params'])}",
                  f"best run folder: {best['run_dir']}", f"best checkpoint: {best['best_checkpoint']}"]
    lines.append(f"report: {summary['files']['trials_md']}")
    return "\n".join(lines)
