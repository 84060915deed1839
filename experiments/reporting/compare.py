"""`run.py --compare RUN ... [--reference RUN] [--out DIR]`: is B better than A, on the same test clips?

Reads each run folder's config.json, metrics.json and test_predictions.npz (runs, `--evaluate`
folders and ensembles alike), groups the runs that differ only in seed (their config.json
without the seed, the run folder and the options that do not change what is trained, see
`experiment.NON_IDENTITY_OPTIONS`), and writes into `--out`:

* ``comparison.md`` / ``comparison.csv``: one row per group: model, recipe (the optimiser, the
  learning rate and every training option in which the groups differ), parameter count, data,
  vocabulary, split, seeds; test ROC-AUC and PR-AUC (mean ± std over seeds when the group has
  several) with a 95% bootstrap interval over test clips; mean TPR / FPR at the validation
  thresholds; and against the reference group the difference B - A with its paired bootstrap
  interval and p-value (see `lightning_modules/bootstrap.py`), for ROC-AUC and PR-AUC;
* ``per_tag_differences.csv`` and ``per_tag_differences.png``: per tag, the ROC-AUC of each group
  minus the reference's (which tags a model wins or loses);
* a W&B table (project mtat-tagging, job type "comparison") when logged in to W&B and online.

For a group of several seeds, every bootstrap resample scores each seed's run on the same
resampled clips and averages them: the interval is that of the seed-mean metric over test
sets, not the spread over seeds (which the ± shows). Point values are the metrics of
`lightning_modules.metrics` on the saved predictions, i.e. the runs' reported test metrics.

Runs on different datasets (MTAT, MTG-Jamendo), test clips or tag lists cannot be compared (one error
naming two of them);
run folders made before predictions were saved are named in one error that says how to
create the file (`--evaluate RUN_DIR`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments.options import NON_IDENTITY_OPTIONS
from experiments.reporting.bootstrap import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    bootstrap_samples,
    paired_difference,
    percentile_interval,
)
from experiments.reporting.predictions import PREDICTIONS_FILE, Predictions, read_predictions
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import write_text_atomic
from lightning_modules.metrics import tagging_metrics

COMPARISON_MD = "comparison.md"
COMPARISON_CSV = "comparison.csv"
PER_TAG_CSV = "per_tag_differences.csv"
PER_TAG_PNG = "per_tag_differences.png"
# Keys of config.json that never make two runs different experiments, beside NON_IDENTITY_OPTIONS.
NOT_IDENTITY = {"seed", "resolved", "evaluated_checkpoint", "run_dir", "runs_root", "cache_dir"}
RECIPE_ALWAYS = ("optimizer", "lr")


@dataclass
class RunRecord:
    """One run folder as the comparison reads it."""

    path: Path
    config: dict
    metrics: dict
    predictions: Predictions  # clips in ascending clip id order
    report: object  # TaggingReport recomputed from the predictions

    @property
    def seed(self):
        return self.config.get("seed")


@dataclass
class Group:
    """Runs that differ only in seed."""

    identity: dict
    runs: list[RunRecord] = field(default_factory=list)
    label: str = ""


def identity_of(config: dict) -> dict:
    return {k: v for k, v in sorted(config.items()) if k not in NON_IDENTITY_OPTIONS and k not in NOT_IDENTITY}


def load_runs(paths: list[str | Path]) -> list[RunRecord]:
    """Read every run folder; one DataError naming all folders without saved test predictions."""
    records, missing = [], []
    for given in paths:
        path = Path(given).expanduser().resolve()
        for name in ("config.json", "metrics.json"):
            if not (path / name).is_file():
                raise DataError(f"{path}: no {name} here; is {given} a finished run or evaluation folder?")
        if not (path / PREDICTIONS_FILE).is_file():
            missing.append(str(path))
            continue
        predictions = read_predictions(path / PREDICTIONS_FILE).sorted_by_clip()
        report = tagging_metrics(torch.from_numpy(predictions.probs), torch.from_numpy(predictions.targets),
                                 predictions.tags, thresholds=torch.from_numpy(predictions.thresholds))
        records.append(RunRecord(path, json.loads((path / "config.json").read_text()),
                                 json.loads((path / "metrics.json").read_text()), predictions, report))
    if missing:
        raise DataError(f"no {PREDICTIONS_FILE} in {len(missing)} run folder(s), made before test predictions were "
                        f"saved: {', '.join(missing)}; create it with `python run.py --evaluate RUN_DIR --run-dir "
                        "RUN_DIR/evaluations/best` and compare that folder")
    return records


DATASET_NAMES = {"mtat": "MTAT", "mtg-jamendo": "MTG-Jamendo"}


def _dataset(record: RunRecord) -> str:
    return record.config.get("dataset") or "mtat"  # config.json names the dataset only when it is not MTAT


def check_comparable(records: list[RunRecord]) -> None:
    """Same dataset, tags, test clips and targets: else one DataError naming two runs."""
    first = records[0]
    for other in records[1:]:
        if _dataset(first) != _dataset(other):
            names = [DATASET_NAMES.get(_dataset(r), _dataset(r)) for r in (first, other)]
            raise DataError(f"{first.path} and {other.path} cannot be compared: the first was tested on {names[0]}, "
                            f"the second on {names[1]} (no test clip or tag in common); compare runs of one dataset")
        a, b = first.predictions, other.predictions
        if a.tags != b.tags:
            raise DataError(f"{first.path} and {other.path} cannot be compared: their tag lists differ "
                            f"({len(a.tags)} tags: {', '.join(a.tags[:3])}, ... vs {len(b.tags)}: "
                            f"{', '.join(b.tags[:3])}, ...)")
        if not np.array_equal(a.clip_ids, b.clip_ids):
            raise DataError(f"{first.path} and {other.path} cannot be compared: they were tested on different clips "
                            f"({a.n_clips} vs {b.n_clips} test clips, {a.split} vs {b.split} split)")
        if not np.array_equal(a.targets, b.targets):
            raise DataError(f"{first.path} and {other.path} cannot be compared: the same test clips carry different "
                            "tags (different datasets or vocabularies)")


def group_runs(records: list[RunRecord]) -> list[Group]:
    groups: list[Group] = []
    for record in records:
        identity = identity_of(record.config)
        for group in groups:
            if group.identity == identity:
                if any(r.path == record.path for r in group.runs):
                    break
                group.runs.append(record)
                break
        else:
            groups.append(Group(identity, [record]))
    return groups


def _recipe(group: Group, groups: list[Group]) -> str:
    if group.identity.get("ensemble"):
        return "mean of " + " + ".join(Path(m["label"]).name for m in group.identity["ensemble"])
    varying = sorted({k for g in groups for k in set(g.identity) | set(group.identity)
                      if g.identity.get(k) != group.identity.get(k)} - {"model", "ensemble"} - set(RECIPE_ALWAYS))
    parts = [f"{group.identity.get('optimizer', '?')} lr {group.identity.get('lr', '?')}"]
    for key in varying:
        value = group.identity.get(key)
        if value not in (None, False):
            parts.append("--" + key.replace("_", "-") + ("" if value is True else f" {value}"))
    return ", ".join(parts)


def _parameters(record: RunRecord) -> int | None:
    resolved = record.config.get("resolved", {})
    if resolved.get("parameters") is not None:
        return int(resolved["parameters"])
    if resolved.get("network"):
        from lightning_modules.registry import build_network

        return sum(p.numel() for p in build_network(resolved["network"]).parameters())
    return None


def _data_label(config: dict) -> str:
    if config.get("dataset") == "mtg-jamendo":
        split = config.get("jamendo_split") or 0
        subset = config.get("jamendo_subset") or "top50tags"
        if config.get("data") == "synthetic":
            return (f"generated MTG-Jamendo ({config.get('synthetic_tracks') or 200} tracks, seed "
                    f"{config.get('synthetic_seed')}), split {split}, {subset}")
        return f"MTG-Jamendo {config.get('data')}, split {split}, {subset}"
    if config.get("data") == "synthetic":
        return (f"generated ({config.get('synthetic_clips')} clips x {config.get('synthetic_clip_samples')} samples, "
                f"seed {config.get('synthetic_seed')})")
    return str(config.get("data"))


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def _f(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _pm(mean: float, std: float | None) -> str:
    return _f(mean) if std is None else f"{_f(mean)} ± {_f(std)}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


@dataclass
class Comparison:
    """What `compare_runs` wrote: the rows (dicts, the CSV's columns) and the files."""

    rows: list[dict]
    files: dict[str, Path]
    reference: str
    n_clips: int


def compare_runs(paths: list[str | Path], out: str | Path, *, reference: str | Path | None = None,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, published: dict | None = None,
                 title: str | None = None, notes: list[str] | None = None, log_wandb: bool = True) -> Comparison:
    """Compare runs (see the module docstring); `published` maps a model name to its published numbers
    ({"roc_auc", "pr_auc", "tpr", "fpr", "source"}), shown beside the measured ones."""
    if n_resamples < 1:
        raise ConfigError(f"--bootstrap {n_resamples}: need at least one resample")
    given = list(paths)
    if reference is not None and Path(reference).expanduser().resolve() not in [Path(p).expanduser().resolve()
                                                                                for p in given]:
        given.insert(0, reference)
    if not given:
        raise ConfigError("--compare needs at least one run folder")
    records = load_runs(given)
    check_comparable(records)
    groups = group_runs(records)
    ref_path = Path(reference).expanduser().resolve() if reference is not None else records[0].path
    ref_group = next(g for g in groups if any(r.path == ref_path for r in g.runs))
    _label_groups(groups)

    targets = records[0].predictions.targets
    samples = bootstrap_samples([r.predictions.probs for r in records], targets, n_resamples, seed)
    by_path = {r.path: s for r, s in zip(records, samples)}

    def group_samples(group: Group, metric: str) -> np.ndarray:
        return np.mean([by_path[r.path][metric] for r in group.runs], axis=0)

    def group_point(group: Group, metric: str) -> float:
        return float(np.mean([getattr(r.report, metric) for r in group.runs]))

    rows = []
    for group in groups:
        first = group.runs[0]
        row = {"label": group.label, "model": first.config.get("model"), "recipe": _recipe(group, groups),
               "parameters": _parameters(first), "data": _data_label(first.config),
               "vocabulary": f"{first.config.get('tags')} ({len(first.predictions.tags)} tags)",
               "split": first.predictions.split, "seeds": ",".join(str(r.seed) for r in group.runs),
               "test_clips": first.predictions.n_clips, "reference": group is ref_group}
        for metric in ("roc_auc", "pr_auc", "tpr", "fpr"):
            mean, std = _mean_std([getattr(r.report, metric) for r in group.runs])
            row[metric], row[f"{metric}_std"] = mean, std
        for metric in ("roc_auc", "pr_auc"):
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = percentile_interval(group_samples(group, metric))
            diff = paired_difference(group_samples(ref_group, metric), group_samples(group, metric),
                                     group_point(ref_group, metric), group_point(group, metric))
            row[f"{metric}_diff"], row[f"{metric}_diff_low"], row[f"{metric}_diff_high"] = diff.value, diff.low, diff.high
            row[f"{metric}_diff_p"] = diff.p_value
        if published is not None:
            paper = published.get(row["model"]) or {}
            for metric in ("roc_auc", "pr_auc", "tpr", "fpr"):
                row[f"published_{metric}"] = paper.get(metric)
        rows.append(row)

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / COMPARISON_MD, "csv": out / COMPARISON_CSV, "per_tag_csv": out / PER_TAG_CSV}
    meta = {"n_resamples": n_resamples, "seed": seed, "reference": ref_group.label, "n_clips": records[0].predictions.n_clips,
            "title": title, "notes": notes or [], "published": published}
    write_text_atomic(files["csv"], _csv(rows))
    write_text_atomic(files["md"], _markdown(rows, meta))
    per_tag = _per_tag_differences(groups, ref_group)
    write_text_atomic(files["per_tag_csv"], per_tag)
    figure = _per_tag_figure(per_tag, ref_group.label)
    if figure is not None:
        from experiments.reporting.figures import save_figure

        files["per_tag_png"] = save_figure(figure, out / PER_TAG_PNG)
    if log_wandb:
        _log_wandb(rows, out)
    return Comparison(rows, files, ref_group.label, records[0].predictions.n_clips)


def _label_groups(groups: list[Group]) -> None:
    names = [str(g.runs[0].config.get("model")) for g in groups]
    for i, group in enumerate(groups):
        name = names[i]
        group.label = name if names.count(name) == 1 else f"{name} #{names[:i + 1].count(name)}"


CSV_COLUMNS = ["label", "model", "recipe", "parameters", "data", "vocabulary", "split", "seeds", "test_clips",
               "reference", "roc_auc", "roc_auc_std", "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "pr_auc_std",
               "pr_auc_ci_low", "pr_auc_ci_high", "tpr", "tpr_std", "fpr", "fpr_std", "roc_auc_diff",
               "roc_auc_diff_low", "roc_auc_diff_high", "roc_auc_diff_p", "pr_auc_diff", "pr_auc_diff_low",
               "pr_auc_diff_high", "pr_auc_diff_p"]
PUBLISHED_COLUMNS = ["published_roc_auc", "published_pr_auc", "published_tpr", "published_fpr"]


def _csv(rows: list[dict]) -> str:
    columns = CSV_COLUMNS + (PUBLISHED_COLUMNS if rows and "published_roc_auc" in rows[0] else [])
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k]))
                             else (f"{row[k]:.6f}" if isinstance(row.get(k), float) else row[k])) for k in columns})
    return stream.getvalue()


def _markdown(rows: list[dict], meta: dict) -> str:
    first = rows[0]
    lines = [f"# {meta['title'] or 'Comparison'}", "",
             f"Test set: {first['test_clips']} clips, {first['split']} split, {first['vocabulary']}, data: "
             f"{first['data']}. Intervals: 95% bootstrap over test clips ({meta['n_resamples']} resamples, seed "
             f"{meta['seed']}); differences are paired (both models scored on the same resampled clips) against "
             f"the reference, **{meta['reference']}**.", ""]
    published = meta["published"] is not None
    head = ["model", "recipe", "parameters", "seeds", "ROC-AUC", "95% CI", "PR-AUC", "95% CI", "TPR", "FPR",
            "ΔROC-AUC [95% CI]", "p", "ΔPR-AUC [95% CI]", "p"]
    if published:
        head += ["published ROC-AUC", "published PR-AUC", "published TPR", "published FPR"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["label"] + (" (reference)" if row["reference"] else ""), row["recipe"],
                 f"{row['parameters']:,}" if row["parameters"] is not None else "n/a", row["seeds"],
                 _pm(row["roc_auc"], row["roc_auc_std"]), f"[{_f(row['roc_auc_ci_low'])}, {_f(row['roc_auc_ci_high'])}]",
                 _pm(row["pr_auc"], row["pr_auc_std"]), f"[{_f(row['pr_auc_ci_low'])}, {_f(row['pr_auc_ci_high'])}]",
                 _f(row["tpr"], 3), _f(row["fpr"], 3)]
        for metric in ("roc_auc", "pr_auc"):
            if row["reference"]:
                cells += ["—", "—"]
            else:
                cells += [f"{row[f'{metric}_diff']:+.4f} [{row[f'{metric}_diff_low']:+.4f}, "
                          f"{row[f'{metric}_diff_high']:+.4f}]", _p(row[f"{metric}_diff_p"])]
        if published:
            cells += [_f(row.get(f"published_{m}"), 3 if m in ("tpr", "fpr") else 4) if row.get(f"published_{m}")
                      is not None else "n/a" for m in ("roc_auc", "pr_auc", "tpr", "fpr")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "ROC-AUC and PR-AUC: macro means over the tags with a positive and a negative test clip; "
              "mean ± standard deviation over seeds when a row has several. TPR / FPR: means over tags at the "
              "per-tag thresholds chosen on validation (TPR = 1 - FPR there). p: two-sided paired bootstrap "
              "p-value of \"no difference\" (see docs/evaluation.md, \"Comparing models\")."]
    lines += [""] + list(meta["notes"]) if meta["notes"] else []
    return "\n".join(lines).rstrip("\n") + "\n"


def _per_tag_differences(groups: list[Group], ref_group: Group) -> str:
    def per_tag(group: Group) -> np.ndarray:
        values = np.array([[np.nan if v is None else v for v in r.report.per_tag_roc_auc] for r in group.runs],
                          dtype=np.float64)
        with np.errstate(invalid="ignore"), _quiet():
            return np.nanmean(values, axis=0)

    tags = ref_group.runs[0].predictions.tags
    positives = ref_group.runs[0].report.positives
    ref = per_tag(ref_group)
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["model", "tag", "positives", "reference_roc_auc", "roc_auc", "difference"])
    for group in groups:
        if group is ref_group:
            continue
        values = per_tag(group)
        for i, tag in enumerate(tags):
            if math.isnan(ref[i]) or math.isnan(values[i]):
                writer.writerow([group.label, tag, positives[i], "", "", ""])
            else:
                writer.writerow([group.label, tag, positives[i], f"{ref[i]:.6f}", f"{values[i]:.6f}",
                                 f"{values[i] - ref[i]:.6f}"])
    return stream.getvalue()


class _quiet:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def _per_tag_figure(per_tag_csv: str, reference: str):
    """One panel per compared model: per-tag ROC-AUC difference to the reference, sorted (wins right, losses left)."""
    from experiments.reporting.figures import _figure

    rows = [r for r in csv.DictReader(io.StringIO(per_tag_csv)) if r["difference"]]
    models = list(dict.fromkeys(r["model"] for r in rows))
    if not models:
        return None
    n_tags = max(sum(r["model"] == m for r in rows) for m in models)
    figure = _figure(max(6.0, 0.18 * n_tags + 2), 2.6 * len(models))
    axes = figure.subplots(len(models), 1, squeeze=False)[:, 0]
    for ax, model in zip(axes, models):
        mine = sorted((float(r["difference"]), r["tag"]) for r in rows if r["model"] == model)
        values = [v for v, _ in mine]
        ax.bar(range(len(mine)), values, color=["#2a9d4b" if v > 0 else "#c0392b" for v in values])
        ax.set_xticks(range(len(mine)), [t for _, t in mine], rotation=90, fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        wins = sum(v > 0 for v in values)
        ax.set_ylabel("ΔROC-AUC")
        ax.set_title(f"{model} - {reference}: wins {wins} of {len(values)} tags", fontsize=9)
    return figure


def _log_wandb(rows: list[dict], out: Path) -> None:
    """The comparison as a W&B table, only when logged in and online (never an offline run for a table)."""
    import os

    from experiments.reporting.loggers import DEFAULT_PROJECT, choose_wandb_mode, wandb_settings

    if choose_wandb_mode().mode != "online":
        return
    import wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, job_type="comparison",
                     name=f"comparison-{out.name}", dir=str(out), settings=wandb_settings("online"))
    try:
        columns = [c for c in CSV_COLUMNS + PUBLISHED_COLUMNS if c in rows[0]]
        run.log({"comparison": wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
    finally:
        run.finish()
