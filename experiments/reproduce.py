"""`run.py --reproduce NAME [--seeds 0,1,2] [--dry-run | --task-index I]`: a published table in one command.

A table is a list of models with the settings of its protocol and the numbers the authors
published. Reproducing it means training every (model, seed) run with those settings (ordinary
run folders named by their options under --runs-root: a rerun reuses finished runs and resumes
killed ones), then writing `--compare`'s comparison of all of them with the published numbers
in extra columns and the protocol in the title, into `--out` (default RUNS_ROOT/reproduce/NAME).

Options given beside `--reproduce` (data, epochs, batch limits, devices...) are passed to every
run; the protocol's own options cannot be overridden: `--model`, `--seed`, `--run-dir`,
`--dataset` and every option the table's protocol sets (`--tags` and `--split` for the MTAT
tables; `--jamendo-split` and `--jamendo-subset` for won2020-jamendo). `--dry-run` prints the
runs, their folders, whether each is finished, and the exact `python run.py ...` command of each;
`--task-index I` trains only the I-th (what a SLURM array task does, see slurm/reproduce.sbatch),
and a plain `--reproduce NAME` afterwards finds them all finished and writes the table.

A table may build on its own runs (`distillation`): a row of teachers' runs, a row that evaluates their
ensemble (`--evaluate RUN RUN ...`, into RUNS_ROOT/ensembles/NAME-...), and a distilled row whose runs take
every teacher run as `--teacher`. Such runs come after their teachers in the list; a run's folder is named
by its teachers' weights (`experiments.run_folder.config_digest`), so until they are finished the list
says which runs it waits for, and `--task-index` refuses it in one line.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infrastructure.errors import ConfigError

REPRODUCE_DIR = "reproduce"


@dataclass(frozen=True)
class TableRun:
    model: str
    args: tuple[str, ...] = ()
    published: dict = field(default_factory=dict)  # roc_auc, pr_auc, tpr, fpr (None: not published)
    role: str = ""
    """What the row is in the table (teacher, student, ...), shown in the plan."""
    teachers: tuple[str, ...] = ()
    """Models of rows above whose runs (every seed) are this row's --teacher."""
    ensemble_of: tuple[str, ...] = ()
    """This row is the --evaluate ensemble of these rows' runs (every seed), not a training run."""


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    protocol_args: tuple[str, ...]
    protocol: str
    source: str
    runs: tuple[TableRun, ...]
    notes: tuple[str, ...] = ()


TABLES = {
    "table4": TableSpec(
        name="table4", title="Table 4 of Dalla Longa et al.",
        protocol_args=("--tags", "paper", "--split", "folder"),
        protocol="the paper's protocol: `paper` vocabulary (merged synonyms, top 50), folder split (MTAT folders "
                 "0-b train, c valid, d-f test), SGD 0.01 / momentum 0.9 with local and global decay, thresholds "
                 "where TPR = 1 - FPR on validation",
        source="Dalla Longa et al., Table 4 (real MTAT; ROC-AUC, TPR and FPR; no PR-AUC published)",
        runs=(TableRun("mel_cnn", (), {"roc_auc": 0.894, "tpr": 0.827, "fpr": 0.173}),
              TableRun("sample_cnn", (), {"roc_auc": 0.880, "tpr": 0.812, "fpr": 0.187}),
              TableRun("lstm_mel", ("--input-norm",), {"roc_auc": 0.870, "tpr": 0.800, "fpr": 0.203})),
        notes=("lstm_mel runs with `--input-norm` (batch norm over the log-Mel bands before the LSTM; not in the "
               "paper's Table 3): without it the raw dB input saturates the LSTM and SGD barely moves it.",)),
    "won2020": TableSpec(
        name="won2020", title="Won et al. 2020, \"Evaluation of CNN-based automatic music tagging models\", MTAT",
        protocol_args=("--tags", "standard", "--split", "clean"),
        protocol="the literature's protocol: `standard` vocabulary (unmerged top 50), the Lee/Won clean split "
                 "(15,244 / 1,529 / 4,332 clips)",
        source="Won et al. 2020 (SMC), MTAT results; blank where the figure has not been checked against the paper",
        runs=(TableRun("short_chunk_cnn", (), {"roc_auc": 0.9126, "pr_auc": 0.4590}),
              TableRun("short_chunk_resnet", (), {"roc_auc": 0.9129, "pr_auc": 0.4614}),
              TableRun("harmonic_cnn", (), {"roc_auc": 0.9127, "pr_auc": 0.4611}),
              TableRun("musicnn", (), {"roc_auc": 0.9106, "pr_auc": 0.4493}),
              TableRun("fcn"), TableRun("crnn"), TableRun("sample_cnn_se"), TableRun("tagging_transformer")),
        notes=("tagging_transformer is Won et al. 2021 (not in the 2020 paper's MTAT table).",
               "Won et al. trained every model with their own schedule (Adam, then SGD stages); the runs here "
               "use it too (--recipe won2020, these models' default) unless options given beside --reproduce "
               "override it.")),
    "distillation": TableSpec(
        name="distillation", title="Distilling the suite's own ensemble into one model, MTAT",
        protocol_args=("--tags", "standard", "--split", "clean"),
        protocol="the literature's protocol: `standard` vocabulary (unmerged top 50), the Lee/Won clean split "
                 "(15,244 / 1,529 / 4,332 clips); every model with Won et al.'s recipe (its default); the distilled "
                 "student with every teacher run as --teacher, --distill-weight 0.9 and --distill-temperature 1 "
                 "(the defaults, docs/distillation.md)",
        source="Won et al. 2020 (SMC), MTAT results, for the architectures trained alone; none for these distillations",
        runs=(TableRun("short_chunk_resnet", (), {"roc_auc": 0.9129, "pr_auc": 0.4614}, role="teacher"),
              TableRun("musicnn", (), {"roc_auc": 0.9106, "pr_auc": 0.4493}, role="teacher"),
              TableRun("ensemble", role="teachers' ensemble", ensemble_of=("short_chunk_resnet", "musicnn")),
              TableRun("short_chunk_cnn", (), {"roc_auc": 0.9126, "pr_auc": 0.4590}, role="student"),
              TableRun("short_chunk_cnn", role="distilled student", teachers=("short_chunk_resnet", "musicnn"))),
        notes=("The teachers read chunks no longer than the student's 3.69 s crop (short_chunk_resnet the same "
               "59,049 samples, musicnn 3 s frames, two of them spread over the crop), so they see the audio the "
               "student sees; each distilled run learns from every teacher run of every seed, the ensemble of the "
               "row above. The distilled row's published numbers are its architecture's, trained alone.",
               "EAsT-KD (Ding & Lerch 2023) reached 0.915 ROC-AUC / 0.461 PR-AUC on this protocol by distilling "
               "PaSST, pretrained on AudioSet, into a CNN; the teachers here are trained from scratch on MTAT alone.",
               "The distilled runs wait for their teachers: as a SLURM array, run the teachers' tasks first.")),
    "won2020-jamendo": TableSpec(
        name="won2020-jamendo",
        title="Won et al. 2020, \"Evaluation of CNN-based automatic music tagging models\", MTG-Jamendo",
        protocol_args=("--dataset", "mtg-jamendo", "--jamendo-split", "0", "--jamendo-subset", "top50tags"),
        protocol="the literature's MTG-Jamendo protocol: split 0 of `top50tags` (the 50 most frequent tags), "
                 "random chunks of whole tracks in training, chunk probabilities averaged over each track in "
                 "evaluation",
        source="Won et al. 2020 (SMC), MTG-Jamendo results; blank where the figure has not been checked against "
               "the paper",
        runs=(TableRun("short_chunk_cnn", (), {"roc_auc": 0.8324, "pr_auc": 0.2976}),
              TableRun("harmonic_cnn"), TableRun("short_chunk_resnet")),
        notes=("Won et al. trained every model with their own schedule (Adam, then SGD stages); the runs here use it "
               "too (--recipe won2020, these models' default) unless options given beside --reproduce override it.",)),
}
# Never overridable beside --reproduce, whatever the table; each table's protocol_args options are added to these.
PROTECTED_OPTIONS = ("--model", "--seed", "--dataset", "--tags", "--split", "--run-dir", "--resume", "--evaluate",
                     "--compare", "--sweep", "--tag")
# run.py tokens that steer --reproduce itself (with how many values follow) and are not passed to the runs.
OWN_OPTIONS = {"--reproduce": 1, "--seeds": 1, "--dry-run": 0, "--task-index": 1, "--out": 1, "--bootstrap": 1,
               "--bootstrap-seed": 1, "--reference": 1}


@dataclass(frozen=True)
class PlannedRun:
    index: int
    model: str
    seed: int | None
    """None for an ensemble's evaluation."""
    argv: tuple[str, ...]
    run_dir: Path | None
    """None while the run's teachers are not finished (its folder is named by their weights)."""
    role: str = ""
    needs: tuple[int, ...] = ()
    """The runs (indices) that must be finished first: its teachers, or an ensemble's members."""

    @property
    def status(self) -> str:
        if self.run_dir is None:
            return f"waits for run(s) {', '.join(map(str, self.needs))}"
        if (self.run_dir / "metrics.json").is_file():
            return "finished"
        if (self.run_dir / "checkpoints" / "last.ckpt").is_file():
            return "partial (resumes)"
        return "to train" if not self.argv or self.argv[0] != "--evaluate" else "to evaluate"

    @property
    def title(self) -> str:
        what = f"{self.model} ({self.role})" if self.role else self.model
        return what if self.seed is None else f"{what} seed {self.seed}"

    def command(self) -> str:
        return "python run.py " + " ".join(shlex.quote(a) for a in self.argv)


def table(name: str) -> TableSpec:
    if name not in TABLES:
        raise ConfigError(f"--reproduce {name}: unknown table; choose one of {', '.join(TABLES)}")
    return TABLES[name]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text}: expected distinct integers separated by commas, such as 0,1,2")
    return seeds


def protected_options(name: str | None) -> set[str]:
    """The options --reproduce NAME refuses: PROTECTED_OPTIONS and every option of the table's protocol_args."""
    protocol = TABLES[name].protocol_args if name in TABLES else ()
    return set(PROTECTED_OPTIONS) | {token.split("=", 1)[0] for token in protocol if token.startswith("--")}


def _expanded(argv: list[str]) -> list[str]:
    """`argv` with each `--config FILE` replaced by the flags the file stands for, so that the runs get explicit
    options and never the file's own `reproduce:` key."""
    from experiments.cli import config_as_flags

    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--config" and i + 1 < len(argv):
            out += config_as_flags(argv[i + 1])
            i += 2
        elif token.startswith("--config="):
            out += config_as_flags(token.split("=", 1)[1])
            i += 1
        else:
            out.append(token)
            i += 1
    return out


def _table_name(argv: list[str]) -> str | None:
    argv = _expanded(argv)
    for i, token in enumerate(argv):
        if token == "--reproduce" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--reproduce="):
            return token.split("=", 1)[1]
    return None


def passthrough_args(argv: list[str], name: str | None = None) -> list[str]:
    """The command line without --reproduce's own options: what every run of the table gets.

    `name`: the table (default: the value of --reproduce in argv), whose protocol options are refused too.
    """
    name = name if name is not None else _table_name(argv)
    argv = _expanded(argv)
    protected = protected_options(name)
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        option = token.split("=", 1)[0]
        if option in OWN_OPTIONS:
            i += 1 + (OWN_OPTIONS[option] if "=" not in token else 0)
            continue
        if option in protected:
            protocol = " ".join(TABLES[name].protocol_args) if name in TABLES else ""
            raise ConfigError(f"{option} cannot be given with --reproduce{' ' + name if name else ''}: the table fixes "
                              "the models, seeds (--seeds), dataset and protocol"
                              + (f" ({protocol})" if protocol else ""))
        out.append(token)
        i += 1
    return out


def plan_runs(name: str, seeds: list[int], passthrough: list[str],
              run_dir_of: Callable[[list[str]], Path]) -> list[PlannedRun]:
    """Every (model, seed) run of the table, in order, with its run.py arguments and run folder.

    `run_dir_of(argv)` gives the default run folder run.py would use for those arguments. A run with teachers
    gets its folder once they are finished (before: None, and `PlannedRun.needs` says which they are).
    """
    from infrastructure.errors import SuiteError
    from lightning_modules.registry import MODELS

    spec = table(name)
    unknown = [run.model for run in spec.runs if run.model not in MODELS and not run.ensemble_of]
    if unknown:
        raise ConfigError(f"--reproduce {name} needs models this suite does not have yet: {', '.join(unknown)} "
                          f"(known: {', '.join(MODELS)})")
    planned: list[PlannedRun] = []
    plain: dict[str, list[PlannedRun]] = {}  # a model's runs of the rows without teachers
    for run in spec.runs:
        if run.ensemble_of:
            members = [p for model in run.ensemble_of for p in plain[model]]
            folders = [str(p.run_dir) for p in members]
            digest = hashlib.sha1("\n".join(folders).encode()).hexdigest()[:8]
            folder = Path(folders[0]).parent / "ensembles" / f"{name}-{run.model}-{digest}"
            argv = ["--evaluate", *folders, "--run-dir", str(folder), *passthrough]
            planned.append(PlannedRun(len(planned), run.model, None, tuple(argv), folder, run.role,
                                      tuple(p.index for p in members)))
            continue
        teachers = [p for model in run.teachers for p in plain[model]]
        for seed in seeds:
            argv = ["--model", run.model, *spec.protocol_args, *run.args]
            if teachers:
                argv += ["--teacher", *(str(p.run_dir) for p in teachers)]
            argv += ["--seed", str(seed), *passthrough]
            run_dir = None
            if all(p.status == "finished" for p in teachers):
                try:
                    run_dir = run_dir_of(argv)
                except SuiteError:  # a teacher's folder that holds no readable checkpoint yet
                    run_dir = None
            entry = PlannedRun(len(planned), run.model, seed, tuple(argv), run_dir, run.role,
                               tuple(p.index for p in teachers))
            planned.append(entry)
            if not teachers:
                plain.setdefault(run.model, []).append(entry)
    return planned


def format_plan(name: str, planned: list[PlannedRun], final_command: str) -> str:
    lines = [f"{name}: {len(planned)} runs"]
    for run in planned:
        folder = f", {run.run_dir}" if run.run_dir is not None else ""
        lines += [f"[{run.index}] {run.title}: {run.status}{folder}", f"    {run.command()}"]
    lines += [f"then (writes the table): {final_command}"]
    return "\n".join(lines)


def reproduce(name: str, seeds_text: str, argv: list[str], *, run_dir_of: Callable[[list[str]], Path],
              train: Callable[[list[str]], int], runs_root: str, out: str | None = None, dry_run: bool = False,
              task_index: int | None = None, n_resamples: int = 1000, bootstrap_seed: int = 0,
              log_wandb: bool = True) -> int:
    """`--reproduce`: plan, then list (dry run), train one (task index) or train all and write the comparison.

    `train(argv)` runs `run.py argv` and returns its exit code (run.main).
    """
    seeds = parse_seeds(seeds_text)
    table(name)
    passthrough = passthrough_args(argv, name)
    planned = plan_runs(name, seeds, passthrough, run_dir_of)
    final = "python run.py " + " ".join(shlex.quote(a) for a in _without(argv, ("--dry-run", "--task-index")))
    if dry_run:
        print(format_plan(name, planned, final))
        return 0
    if task_index is not None:
        if not 0 <= task_index < len(planned):
            raise ConfigError(f"--task-index {task_index}: {name} with seeds {seeds_text} has runs 0 to {len(planned) - 1}")
        waiting = [i for i in planned[task_index].needs if planned[i].status != "finished"]
        if waiting:
            raise ConfigError(f"--task-index {task_index}: run {task_index} ({planned[task_index].title}) needs run(s) "
                              f"{', '.join(map(str, waiting))} finished first (its teachers)")
        planned = [planned[task_index]]
    for run in planned:
        print(f"[{run.index}] {run.title}: {run.command()}", file=sys.stderr, flush=True)
        code = train(list(run.argv))
        if code != 0:
            print(f"error: run {run.index} ({run.title}) failed; rerun the same command to continue "
                  "(finished runs are kept)", file=sys.stderr)
            return code
    if task_index is not None:
        return 0
    planned = plan_runs(name, seeds, passthrough, run_dir_of)  # every folder known now: teachers are finished
    from experiments.reporting.compare import compare_runs

    spec = table(name)
    target = Path(out) if out else Path(runs_root) / REPRODUCE_DIR / name
    data = _data_words(passthrough)
    dataset = "MTG-Jamendo" if "mtg-jamendo" in spec.protocol_args else "MTAT"
    notes = [f"Published: {spec.source}. Measured: {data}, with run.py options `{' '.join(passthrough) or '(none)'}`"
             + (f" — generated data, not {dataset}: the published numbers are beside them for the protocol, not as "
                "a target these runs could reach." if "synthetic" in data else "."), *spec.notes]
    published = {run.model: run.published for run in spec.runs if run.published}
    comparison = compare_runs([run.run_dir for run in planned], target, n_resamples=n_resamples, seed=bootstrap_seed,
                              published=published, title=f"{spec.title}: reproduced under {spec.protocol}",
                              notes=notes, log_wandb=log_wandb)
    print(f"comparison: {comparison.files['md']}")
    if comparison.verdict:
        print(comparison.verdict)
    return 0


def _data_words(passthrough: list[str]) -> str:
    for i, token in enumerate(passthrough):
        if token == "--data" and i + 1 < len(passthrough):
            return "generated data (`--data synthetic`)" if passthrough[i + 1] == "synthetic" else f"data {passthrough[i + 1]}"
        if token.startswith("--data="):
            value = token.split("=", 1)[1]
            return "generated data (`--data synthetic`)" if value == "synthetic" else f"data {value}"
    return "generated data (`--data synthetic`, run.py's default)"


def _without(argv: list[str], names: tuple[str, ...]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in names:
            i += 1 + (OWN_OPTIONS[name] if "=" not in argv[i] else 0)
            continue
        out.append(argv[i])
        i += 1
    return out

