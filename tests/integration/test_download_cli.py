"""`python run.py --download DIR` through the CLI.

The download machinery itself is tested in tests/unit/datamodules/datasets/mtat/test_download.py.
"""

import run


def test_download_from_an_unreachable_mirror_is_one_clear_error(tmp_path, capsys):
    code = run.main(["--download", str(tmp_path / "mtat"), "--download-url", f"file://{tmp_path}/no-mirror/",
                     "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "mp3.zip.001" in err[0]
