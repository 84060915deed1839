"""run.py's command line: `--summary` tables and one-line usage errors."""

import re

import pytest

import run


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
    (["--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
    (["--model", "mel_cnn", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--checkpoint", "x.ckpt"], "--checkpoint goes with --tag PATH..."),
    ([], "--model is required"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("run.py: error: ") and expected in err
    assert "--help" in err  # where the full usage is
