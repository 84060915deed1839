"""run.py's command line: `--summary` tables and one-line usage errors."""

import re
import sys

import pytest

import run
from infrastructure.errors import ConfigError


def test_lstm_summary_prints_layers_and_both_totals(capsys):
    """`run.py --model lstm_mel --summary`: Table 3 layer by layer, PyTorch and paper (Keras) parameter counts."""
    assert run.main(["--model", "lstm_mel", "--summary"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("lstm_mel (Table 3): input (128, 227)")
    header = next(line for line in lines if line.startswith("layer"))
    assert "# params (PyTorch)" in header and "# params (paper/Keras)" in header
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines if re.match(r"(bi-LSTM|conv|dense|dropout)", line)]
    rows = {first: rest for first, *rest in cells}
    assert rows["bi-LSTM(100) (layer 1/2)"] == ["227x200", "184,000", "183,200"]  # PyTorch has two LSTM biases
    assert rows["bi-LSTM(100) (layer 2/2)"] == ["227x200", "241,600", "240,800"]
    assert rows["dense 50"] == ["50", "552,550", "552,550"]
    assert len([name for name in rows if name.startswith("conv 3 - 50")]) == 1  # three identical rows, one key
    assert sum(line.startswith("conv 3 - 50") for line in lines) == 3
    total = next(line for line in lines if line.startswith("Total params")).split()
    assert total[-2:] == ["1,023,300", "1,021,700"]  # PyTorch, paper


@pytest.mark.parametrize("argv, expected", [
    (["--model", "vgg"], "argument --model: unknown model 'vgg'"),
    (["--model", "mel_cnn", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["--checkpoint", "x.ckpt"], "--checkpoint goes with --tag PATH..."),
    ([], "--model is required"),
    # an option of one mode given without it would be ignored
    (["--model", "mel_cnn", "--dry-run"], "--dry-run goes with --reproduce; without it, it would be ignored"),
    (["--sweep", "lstm_mel", "--seeds", "0,1"], "--seeds goes with --reproduce"),
    (["--model", "mel_cnn", "--trials", "3"], "--trials goes with --sweep or --sweep-report"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run.py: error: ") and expected in err
    assert "--help" in err  # where the full usage is


# ---- a --storage password never leaves memory --------------------------------------------------------------
SECRET = "Sekr1t-7fQ2"


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://optuna:{SECRET}@db.example:5432/optuna", "postgresql://optuna:***@db.example:5432/optuna"),
    (f"postgresql+psycopg://optuna:{SECRET}@db/optuna?sslmode=require",
     "postgresql+psycopg://optuna:***@db/optuna?sslmode=require"),
    ("postgresql://optuna@db/optuna", "postgresql://optuna@db/optuna"),  # the recommended form: nothing to hide
    ("sqlite:////shared/study.db", "sqlite:////shared/study.db"),
    ("journal:/shared/study.log", "journal:/shared/study.log"),
    (f"weird://optuna:{SECRET}@db", "weird://optuna:***@db"),
    (None, None),
])
def test_a_storage_url_is_shown_with_its_password_masked(url, shown):
    from experiments.options import masked_storage
    from sweeps.database import masked
    from sweeps.storage import StorageTarget

    assert masked_storage(url) == shown
    if url:
        assert masked(url) == shown
        assert StorageTarget("rdb", url, None).describe() == shown


def test_print_config_masks_the_password_and_its_file_connects_with_pgpassword(tmp_path, capsys, monkeypatch):
    from sweeps.storage import connect_url, parse_storage

    url = f"postgresql://optuna:{SECRET}@127.0.0.1:1/optuna"
    argv = ["--sweep", "lstm_mel", "--study-name", "s", "--storage", url, "--runs-root", str(tmp_path)]
    monkeypatch.setattr("sys.argv", ["run.py", "--print-config", *argv])
    assert run.main(["--print-config", *argv]) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and "storage: postgresql://optuna:***@127.0.0.1:1/optuna" in printed
    assert SECRET not in " ".join(sys.argv) and "optuna:***@" in " ".join(sys.argv)  # W&B records sys.argv
    config = tmp_path / "sweep.yaml"
    config.write_text(printed)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    assert run.main(["--config", str(config), "--sweep-report"]) == 2  # refused before any connection
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the password is masked" in err and "set PGPASSWORD" in err and SECRET not in err
    monkeypatch.setenv("PGPASSWORD", SECRET)
    target = parse_storage(url.replace(SECRET, "***"), tmp_path)
    assert target.url == "postgresql://optuna@127.0.0.1:1/optuna"  # libpq reads PGPASSWORD itself
    assert connect_url(url) == url  # a password given in the URL is used as given
    with pytest.raises(ConfigError, match="only PostgreSQL can read it"):
        connect_url("mysql://optuna:***@db/optuna")
