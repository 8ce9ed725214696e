"""The released KEEP from the command line: the offline message for the default model, and
the fidelity knob in inference.py and in the benchmark configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference import main
from keep.config import load_config
from keep.errors import KeepError
from keep.evaluation import BenchmarkConfig
from keep.evaluation.runner import _load_network
from keep.pipeline.restore import RestoreStage
from keep.weights import REGISTRY

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "carphone_sample.mp4"


def test_default_model_offline_names_file_url_and_flag(tmp_path, capsys, monkeypatch):
    """`inference.py` on the sample clip, default model (`keep`, the v1.0.0 release), nothing on disk."""
    for var in ("KEEP_WEIGHTS_DIR", "KEEP_CACHE_DIR", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    entry = REGISTRY["keep"]
    assert main(["-i", str(SAMPLE), "-o", str(tmp_path / "out"), "--detector", "dlib"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert entry.filename == "KEEP-b76feb75.pth"
    assert entry.filename in err[0] and entry.url in err[0] and "--model preset:tiny" in err[0]  # the offline try
    assert not (tmp_path / "out").exists()  # the run never started: no folder left (a subprocess: test_entry_points)


class Stop(KeepError):
    pass


def test_fidelity_flag_reaches_the_network(tmp_path, capsys, monkeypatch):
    """The fidelity is the run's (`RunOptions`): the restore stage sets it on the network for each input."""
    seen = []
    start = RestoreStage.start

    def started(self, job, slots):
        start(self, job, slots)
        seen.append(self.model.fidelity)
        raise Stop("stopped by the test before restoring")

    monkeypatch.setattr(RestoreStage, "start", started)
    args = ["-i", str(SAMPLE), "-o", str(tmp_path / "out"), "--model", "preset:tiny", "--has_aligned"]
    args += ["--set", "overlap=off"]  # no worker processes to start
    assert main([*args, "--fidelity", "0.25"]) == 2 and seen == [0.25]
    assert main(args) == 2 and seen == [0.25, 1.0]  # default: every release's value
    capsys.readouterr()
    assert main([*args, "--fidelity", "1.5"]) == 2 and len(seen) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fidelity" in err[0] and "between 0 and 1" in err[0]


def test_benchmark_fidelity_reaches_the_network():
    cfg = load_config(BenchmarkConfig, None, ["model.source=preset:tiny", "model.flow=dis", "model.fidelity=0.5"])
    assert _load_network(cfg, "cpu").fidelity == 0.5
    assert load_config(BenchmarkConfig, None, []).model.fidelity == 1.0
    with pytest.raises(KeepError, match="'model.fidelity' must be between 0 and 1"):  # refused as it is read
        load_config(BenchmarkConfig, None, ["model.source=preset:tiny", "model.fidelity=-0.1"])
