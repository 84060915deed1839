"""`run.py --compare RUN ... [--reference RUN] [--out DIR]`: is B better than A, on the same test clips?

Reads each run folder's config.json, metrics.json and test_predictions.npz (runs, `--evaluate`
folders and ensembles alike), groups the runs that differ only in seed (their config.json
without the seed, the run folder and the options that do not change what is trained, see
`experiment.NON_IDENTITY_OPTIONS`), and writes into `--out`:

* ``comparison.md`` / ``comparison.csv``: one row per group: model, recipe (the optimiser, the
  learning rate and every training option in which the groups differ), parameter count, data,
  vocabulary, split, seeds; test ROC-AUC and PR-AUC (mean ± std over seeds when the group has
  several) with a 95% BCa bootstrap interval over test clips; mean TPR / FPR at the validation
  thresholds; and against the reference group the difference B - A with its paired bootstrap
  interval and p-value (see `experiments/reporting/bootstrap.py`), for ROC-AUC and PR-AUC. An
  interval that cannot be given honestly (it would not contain its estimate, or the test set is
  too small to resample) is not printed: the table says "not given" and a note below it says why;
* in comparison.md, one sentence when the test set cannot separate the runs (`separation_verdict`:
  no difference's interval excludes 0, or a scored tag has fewer than `MIN_TAG_POSITIVES` positive
  test clips, or the test set is too small to resample);
* ``per_tag_differences.csv`` and ``per_tag_differences.png``: per tag, the ROC-AUC of each group
  minus the reference's (which tags a model wins or loses);
* a W&B table (project mtat-tagging, job type "comparison") when logged in to W&B and online.

For a group of several seeds, every bootstrap resample scores each seed's run on the same
resampled clips and averages them: the interval is that of the seed-mean metric over test
sets, not the spread over seeds (which the ± shows); its BCa acceleration comes from the seeds'
mean influence of each clip. Point values are the metrics of
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
    METRICS,
    BootstrapUnavailable,
    bca_interval,
    bootstrap_samples,
    macro_influence,
    paired_difference,
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
MIN_TAG_POSITIVES = 10
"""A test set on which a scored tag has fewer positive clips than this cannot separate runs (`separation_verdict`):
that tag's average precision moves in large steps with every clip, and resampling so few clips cannot
imitate another test set."""
NOT_GIVEN = "not given"


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
    """What makes runs seeds of one model: their options, teachers counted by their weights (`teacher_identity`),
    not by the paths they were given as."""
    identity = {k: v for k, v in sorted(config.items()) if k not in NON_IDENTITY_OPTIONS and k not in NOT_IDENTITY}
    if "teacher_identity" in identity:
        identity.pop("teacher", None)
    return identity


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
        if key == "teacher_identity" and value:  # the teachers by their folders' names (their digests tell them apart)
            key, value = "teacher", " ".join(Path(run["given"]).name for run in group.runs[0].config["resolved"]["teachers"])
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
    verdict: str | None = None  # the sentence saying the test set cannot separate the runs, if it cannot


def separation_verdict(rows: list[dict], targets: np.ndarray, tags: list[str], unavailable: str | None) -> str | None:
    """One sentence when this test set cannot separate the runs compared, else None.

    The rule: the test set cannot separate the runs when (a) it is too small to resample at all
    (`bootstrap.BootstrapUnavailable`), or (b) some scored tag (one with a positive and a negative
    test clip) has fewer than `MIN_TAG_POSITIVES` positive test clips, or (c) there are runs to
    compare and no difference to the reference, in any metric, has a published interval that
    excludes 0. With a single row, (b) and (a) still say the intervals cannot be trusted.
    """
    others = [row for row in rows if not row["reference"]]
    what = "separate these runs" if others else "give trustworthy intervals"
    if unavailable:
        return f"This test set cannot {what}: {unavailable}."
    positives = (np.asarray(targets) > 0).sum(axis=0)
    scored = [i for i in range(len(tags)) if 0 < positives[i] < len(targets)]
    rare = sorted((i for i in scored if positives[i] < MIN_TAG_POSITIVES), key=lambda i: (positives[i], i))
    reasons = []
    if rare:
        named = ", ".join(f"{tags[i]} ({positives[i]})" for i in rare[:3]) + (", ..." if len(rare) > 3 else "")
        reasons.append(f"{len(rare)} of its {len(scored)} scored tags have fewer than {MIN_TAG_POSITIVES} positive "
                       f"test clips ({named}), too few for resampling to imitate another test set")
    separated = any(row[f"{metric}_diff_note"] is None and (row[f"{metric}_diff_low"] > 0 or
                                                            row[f"{metric}_diff_high"] < 0)
                    for row in others for metric in METRICS)
    if others and not separated:
        reasons.append("the 95% interval of every difference to the reference contains 0 (or could not be given)")
    if not reasons:
        return None
    return f"This test set ({len(targets)} clips) cannot {what}: " + "; and ".join(reasons) + "."


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
    try:
        samples = bootstrap_samples([r.predictions.probs for r in records], targets, n_resamples, seed)
        unavailable = None
    except BootstrapUnavailable as error:
        samples, unavailable = [None] * len(records), str(error)
    by_path = {r.path: s for r, s in zip(records, samples)}
    influence = {r.path: macro_influence(r.predictions.probs, targets) for r in records}

    def group_mean(values: dict, group: Group, metric: str) -> np.ndarray:
        return np.mean([values[r.path][metric] for r in group.runs], axis=0)

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
        for metric in METRICS:
            if unavailable:
                nan = float("nan")
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], row[f"{metric}_ci_note"] = nan, nan, unavailable
                row[f"{metric}_diff"] = group_point(group, metric) - group_point(ref_group, metric)
                row[f"{metric}_diff_low"] = row[f"{metric}_diff_high"] = row[f"{metric}_diff_p"] = nan
                row[f"{metric}_diff_note"] = unavailable
                continue
            interval = bca_interval(group_mean(by_path, group, metric), group_point(group, metric),
                                    group_mean(influence, group, metric))
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = interval.low, interval.high
            row[f"{metric}_ci_note"] = interval.reason
            diff = paired_difference(group_mean(by_path, ref_group, metric), group_mean(by_path, group, metric),
                                     group_point(ref_group, metric), group_point(group, metric),
                                     group_mean(influence, ref_group, metric), group_mean(influence, group, metric))
            row[f"{metric}_diff"], row[f"{metric}_diff_low"], row[f"{metric}_diff_high"] = diff.value, diff.low, diff.high
            row[f"{metric}_diff_p"] = diff.p_value
            row[f"{metric}_diff_note"] = None if group is ref_group else diff.reason
        if published is not None:
            paper = published.get(row["model"]) or {}
            for metric in ("roc_auc", "pr_auc", "tpr", "fpr"):
                row[f"published_{metric}"] = paper.get(metric)
        rows.append(row)
    verdict = separation_verdict(rows, records[0].predictions.targets, records[0].predictions.tags, unavailable)

    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / COMPARISON_MD, "csv": out / COMPARISON_CSV, "per_tag_csv": out / PER_TAG_CSV}
    meta = {"n_resamples": n_resamples, "seed": seed, "reference": ref_group.label, "n_clips": records[0].predictions.n_clips,
            "title": title, "notes": notes or [], "published": published, "verdict": verdict}
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
    return Comparison(rows, files, ref_group.label, records[0].predictions.n_clips, verdict)


def _label_groups(groups: list[Group]) -> None:
    names = [str(g.runs[0].config.get("model")) for g in groups]
    for i, group in enumerate(groups):
        name = names[i]
        group.label = name if names.count(name) == 1 else f"{name} #{names[:i + 1].count(name)}"


CSV_COLUMNS = ["label", "model", "recipe", "parameters", "data", "vocabulary", "split", "seeds", "test_clips",
               "reference", "roc_auc", "roc_auc_std", "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "pr_auc_std",
               "pr_auc_ci_low", "pr_auc_ci_high", "tpr", "tpr_std", "fpr", "fpr_std", "roc_auc_diff",
               "roc_auc_diff_low", "roc_auc_diff_high", "roc_auc_diff_p", "pr_auc_diff", "pr_auc_diff_low",
               "pr_auc_diff_high", "pr_auc_diff_p", "roc_auc_ci_note", "pr_auc_ci_note", "roc_auc_diff_note",
               "pr_auc_diff_note"]
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
             f"{first['data']}. Intervals: 95% BCa bootstrap over test clips ({meta['n_resamples']} resamples, seed "
             f"{meta['seed']}); differences are paired (both models scored on the same resampled clips) against "
             f"the reference, **{meta['reference']}**.", ""]
    if meta.get("verdict"):
        lines += [f"**{meta['verdict']}**", ""]
    published = meta["published"] is not None
    head = ["model", "recipe", "parameters", "seeds", "ROC-AUC", "95% CI", "PR-AUC", "95% CI", "TPR", "FPR",
            "ΔROC-AUC [95% CI]", "p", "ΔPR-AUC [95% CI]", "p"]
    if published:
        head += ["published ROC-AUC", "published PR-AUC", "published TPR", "published FPR"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    footnotes: list[str] = []

    def not_given(reason: str) -> str:
        if reason not in footnotes:
            footnotes.append(reason)
        return f"{NOT_GIVEN} ({footnotes.index(reason) + 1})"

    for row in rows:
        cells = [row["label"] + (" (reference)" if row["reference"] else ""), row["recipe"],
                 f"{row['parameters']:,}" if row["parameters"] is not None else "n/a", row["seeds"]]
        for metric in METRICS:
            cells.append(_pm(row[metric], row[f"{metric}_std"]))
            if row.get(f"{metric}_ci_note"):
                cells.append(not_given(row[f"{metric}_ci_note"]))
            else:
                cells.append(f"[{_f(row[f'{metric}_ci_low'])}, {_f(row[f'{metric}_ci_high'])}]")
        cells += [_f(row["tpr"], 3), _f(row["fpr"], 3)]
        for metric in METRICS:
            if row["reference"]:
                cells += ["—", "—"]
            elif row.get(f"{metric}_diff_note"):
                cells += [f"{row[f'{metric}_diff']:+.4f} " + not_given(row[f"{metric}_diff_note"]),
                          _p(row[f"{metric}_diff_p"])]
            else:
                cells += [f"{row[f'{metric}_diff']:+.4f} [{row[f'{metric}_diff_low']:+.4f}, "
                          f"{row[f'{metric}_diff_high']:+.4f}]", _p(row[f"{metric}_diff_p"])]
        if published:
            cells += [_f(row.get(f"published_{m}"), 3 if m in ("tpr", "fpr") else 4) if row.get(f"published_{m}")
                      is not None else "n/a" for m in ("roc_auc", "pr_auc", "tpr", "fpr")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if footnotes:
        lines += ["", "Intervals not given:"] + [f"({i}) {note}." for i, note in enumerate(footnotes, 1)]
    lines += ["", "ROC-AUC and PR-AUC: macro means over the tags with a positive and a negative test clip; "
              "mean ± standard deviation over seeds when a row has several. TPR / FPR: means over tags at the "
              "per-tag thresholds chosen on validation (TPR = 1 - FPR there). Intervals: bias-corrected and "
              "accelerated (BCa) over resampled test sets that keep every scored tag; one that would not contain "
              "its estimate is not given. p: two-sided paired bootstrap p-value of \"no difference\" (the BCa "
              "interval inverted). See docs/reading-results.md."]
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
