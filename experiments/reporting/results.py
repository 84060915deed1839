"""The result files of a run: metrics.json, per_tag.csv and results.md (shaped like the paper's Table 4)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from infrastructure.io import write_json_atomic, write_text_atomic
from lightning_modules.metrics import TaggingReport

PAPER_TABLE_4 = {  # model: (ROC-AUC, TPR, FPR) as the paper reports them
    "mel_cnn": (0.894, 0.827, 0.173),
    "sample_cnn": (0.880, 0.812, 0.187),
    "lstm_mel": (0.870, 0.800, 0.203),
}


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


FALLBACK_CELLS = {True: "True", False: "False", None: "unknown"}


def fell_back_tags(report: TaggingReport) -> tuple[list[str], list[str]]:
    """(tags whose threshold fell back to 0.5, tags for which that is unknown), in column order."""
    states = report.threshold_fell_back or []
    return ([t for t, s in zip(report.tag_names, states) if s is True],
            [t for t, s in zip(report.tag_names, states) if s is None])


def per_tag_csv(report: TaggingReport) -> str:
    """One row per tag: positives, ROC-AUC, PR-AUC, threshold, whether it fell back, TPR and FPR at it.

    Metric cells are empty when the tag is not evaluable; `threshold_fell_back` is True when the
    threshold is 0.5 because validation had no positive (or no negative) clip of the tag, False
    when it was chosen there, "unknown" for a checkpoint saved before that was recorded, and empty
    when no thresholds were applied.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tag", "positives", "roc_auc", "pr_auc", "threshold", "threshold_fell_back", "tpr", "fpr",
                     "evaluable"])
    excluded = set(report.excluded_tags)
    for i, tag in enumerate(report.tag_names):
        def cell(values):
            if values is None or values[i] is None or (isinstance(values[i], float) and math.isnan(values[i])):
                return ""
            return f"{values[i]:.6f}"
        fell_back = ("" if report.thresholds is None or report.threshold_fell_back is None
                     else FALLBACK_CELLS[report.threshold_fell_back[i]])
        writer.writerow([tag, report.positives[i], cell(report.per_tag_roc_auc), cell(report.per_tag_pr_auc),
                         cell(report.thresholds), fell_back, cell(report.per_tag_tpr), cell(report.per_tag_fpr),
                         tag not in excluded])
    return out.getvalue()


def results_markdown(model: str, report: TaggingReport, run_dir: Path, data: str) -> str:
    """A table shaped like the paper's Table 4, with the paper's row for the same model beside it.

    `data` names the dataset of this run, so a result on the generated stand-in is never read as
    an MTAT result next to the paper's row.
    """
    lines = [f"# Results of {run_dir.name}", "",
             "| model | ROC-AUC | PR-AUC | TPR | FPR |", "|---|---|---|---|---|",
             f"| {model} (this run, {data}, {report.n_clips} test clips) | {_fmt(report.roc_auc)} | {_fmt(report.pr_auc)} "
             f"| {_fmt(report.tpr, 3)} | {_fmt(report.fpr, 3)} |"]
    if model in PAPER_TABLE_4:
        auc, tpr, fpr = PAPER_TABLE_4[model]
        lines.append(f"| {model} (paper, Table 4, real MTAT) | {auc:.3f} | n/a | {tpr:.3f} | {fpr:.3f} |")
    lines += ["", "TPR and FPR are means over tags at per-tag thresholds where TPR = 1 - FPR on the validation "
              "set (paper §4.6), applied to the test set."]
    fell_back, unknown = fell_back_tags(report)
    if fell_back:
        lines += ["", f"Thresholds that fell back to 0.5 (too few validation positives to choose one; their TPR "
                  f"and FPR count in the means all the same): {', '.join(fell_back)}."]
    if unknown:
        lines += ["", f"Thresholds of exactly 0.5 that may have fallen back (the checkpoint was saved before "
                  f"fallbacks were recorded): {', '.join(unknown)}."]
    if report.excluded_tags:
        lines += ["", f"Left out of the macro averages (no positive or no negative test clip): "
                  f"{', '.join(report.excluded_tags)}."]
    return "\n".join(lines) + "\n"


def write_results(run_dir: Path, resolved: dict, report: TaggingReport, thresholds: torch.Tensor, *,
                  best_checkpoint: Path | None, best_val: dict, epochs: int) -> dict:
    """Write metrics.json, per_tag.csv and results.md atomically; return what metrics.json holds."""
    test = report.to_dict()
    metrics = {
        "model": resolved["model"], "run_dir": str(run_dir),
        "best_checkpoint": str(best_checkpoint) if best_checkpoint else None,
        "epochs": epochs, "best_validation": best_val,
        "test": test, "thresholds": [float(t) for t in thresholds],
        # the headline numbers at the top level too, for scripts
        "roc_auc": test["roc_auc"], "pr_auc": test["pr_auc"], "tpr": test["tpr"], "fpr": test["fpr"],
    }
    write_text_atomic(run_dir / "per_tag.csv", per_tag_csv(report))
    data = "synthetic data" if resolved.get("data") == "synthetic" else f"data {resolved.get('data')}"
    write_text_atomic(run_dir / "results.md", results_markdown(resolved["model"], report, run_dir, data))
    write_json_atomic(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    return metrics
