"""Progress and Ctrl-C of c3d-predict and c3d-extract's bar: per video and per window, rates
counted from when the network is ready, no empty bar when nothing is left to do, exit 130
with one line."""

from __future__ import annotations

import time

from click.testing import CliRunner

from c3d_extract.store.records import VideoRecord


def test_predict_bar_shows_windows_within_a_long_video(capsys):
    from c3d_extract.cli.predict import PredictBar

    bar = PredictBar(quiet=False)
    time.sleep(0.3)  # loading the network: not counted in the rate
    bar.start(2, 0)
    bar.drawn -= 1.0  # the last drawing long ago: the next window redraws
    bar.clips_done(8)
    shown = capsys.readouterr().err
    assert "0/2" in shown and "8 windows" in shown
    bar.video_done(VideoRecord(id="a.mp4", status="ok"))
    bar.close()
    shown = capsys.readouterr().err
    assert "1/2" in shown
    rate = float(shown.split("windows, ")[-1].split(" windows/s")[0])
    assert rate > 8 / 0.3  # the 0.3 s before start() are not in it


def test_no_bar_when_nothing_is_left_to_do(capsys):
    from c3d_extract.cli.extract import BarProgress
    from c3d_extract.cli.predict import PredictBar

    for bar in (BarProgress(quiet=False), PredictBar(quiet=False)):
        bar.start(0, 0)
        bar.close()
    extract_bar = BarProgress(quiet=False)
    extract_bar.start(3, 3)
    extract_bar.close()
    assert capsys.readouterr().err == ""


def test_extract_rate_counts_from_start():
    from c3d_extract.cli.extract import BarProgress

    bar = BarProgress(quiet=True)
    time.sleep(0.2)
    before = time.monotonic()
    bar.start(1, 0)
    assert bar.started >= before


def test_predict_ctrl_c_exits_130_with_one_line(monkeypatch, tmp_path):
    import c3d_extract.predict.classify as predict_module
    from c3d_extract.cli.predict import cli

    video = tmp_path / "match.mp4"
    video.write_bytes(b"\0")

    def interrupted(videos, model, progress=None, **settings):
        progress.start(len(videos), 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_module, "predict_in_order", interrupted)
    monkeypatch.setattr("c3d_extract.weights.networks.load_model",
                        lambda *a, **k: type("M", (), {"class_names": (), "num_classes": 3})())
    result = CliRunner().invoke(cli, [str(video), "--weights", "random"],
                                prog_name="c3d-predict")
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted after 0 of 1 videos: nothing is written (the predictions are printed "
        "when every video is done); rerun the command to predict again")
    assert "Traceback" not in result.output and "Aborted" not in result.output
