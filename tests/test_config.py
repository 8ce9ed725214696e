"""YAML -> typed dataclass config, overrides and errors."""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated

import pytest

from keep.archs.keep_arch import KEEPConfig
from keep.config import Range, load_config, save_config
from keep.errors import KeepError
from keep.evaluation import BenchmarkConfig
from keep.train import TrainConfig
from keep.train.config import TrainSection


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    model: KEEPConfig = field(default_factory=KEEPConfig)
    optim: Optim = field(default_factory=Optim)
    resume: str | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yml"
    path.write_text(text)
    return path


def test_defaults_yaml_then_overrides(tmp_path):
    path = write(tmp_path, "steps: 5\nmodel:\n  cfa_scales: [16]\noptim:\n  lr: 2\n")
    cfg = load_config(Run, path, ["optim.betas=[0.5, 0.9]", "resume=exp/x.pth", "model.nf=32"])
    assert cfg.steps == 5 and cfg.model.cfa_scales == (16,) and cfg.model.nf == 32
    assert cfg.optim.lr == 2.0 and isinstance(cfg.optim.lr, float) and cfg.optim.betas == (0.5, 0.9)
    assert cfg.resume == "exp/x.pth" and cfg.model.cft_scales == (16, 32, 64)
    save_config(cfg, tmp_path / "out.yml")
    assert load_config(Run, tmp_path / "out.yml") == cfg


def test_flags_come_after_the_file_and_before_set(tmp_path):
    """The one way an entry point layers its flags (keep.config.load_config): defaults, YAML, the flags given (None: not
    given), then `--set`; a flag's value is typed as it is, never parsed as YAML."""
    path = write(tmp_path, "steps: 5\nname: from_file\n")
    flags = {"name": "from_flag", "optim.lr": 0.5, "resume": None, "steps": None}
    cfg = load_config(Run, path, ["optim.lr=3"], flags=flags)
    assert (cfg.name, cfg.steps, cfg.optim.lr, cfg.resume) == ("from_flag", 5, 3.0, None)
    assert load_config(Run, None, [], flags={"name": "[1, 2]: not YAML"}).name == "[1, 2]: not YAML"
    with pytest.raises(KeepError, match="unknown config key 'nosuch'"):
        load_config(Run, None, [], flags={"nosuch": 1})


def test_yaml_words_that_are_booleans_stay_words_for_text_fields():
    """`--set overlap=off` names a mode (YAML 1.1 would read a boolean); a boolean field still reads on/off."""

    @dataclass
    class Modes:
        overlap: str = "processes"
        draw_box: bool = False

    cfg = load_config(Modes, None, ["overlap=off", "draw_box=on"])
    assert (cfg.overlap, cfg.draw_box) == ("off", True)
    assert load_config(Modes, None, ["draw_box=No"]).draw_box is False


def test_a_whole_number_for_a_text_field_is_its_digits():
    """`--set faces=0` means track 0: YAML reads a number, the text field takes its digits; a list of track
    ids stays text as YAML reads it, and a number field still refuses text."""
    from keep.pipeline import PipelineOptions

    assert load_config(PipelineOptions, None, ["faces=0"]).faces == "0"
    assert load_config(PipelineOptions, None, ["faces=0,2"]).faces == "0,2"
    with pytest.raises(KeepError, match="'window': expected an integer"):
        load_config(PipelineOptions, None, ["window=eight"])


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("stepz: 3\n", [], "unknown config key 'stepz'"),
        ("", ["model.cfa_scale=[16]"], "unknown config key 'model.cfa_scale'"),
        ("steps: three\n", [], "'steps': expected an integer"),
        ("", ["model.cft_scales=16"], "'model.cft_scales': expected a list"),
        ("", ["model.cft_scales=['16']"], r"'model.cft_scales\[0\]': expected an integer"),
        ("", ["optim.betas=[0.9]"], "expected 2 values"),
        ("", ["steps"], "key=value"),
        ("model: 3\n", [], "expected a mapping"),
    ],
)
def test_errors_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(KeepError, match=message):
        load_config(Run, write(tmp_path, text), overrides)


def test_missing_file():
    with pytest.raises(KeepError, match="config file not found"):
        load_config(Run, "nope.yml")


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads `5e-5` as a string; a float field takes it as the number it means."""
    cfg = load_config(Run, write(tmp_path, "optim: {lr: 5e-5}\n"), ["optim.betas=[9e-1, 0.99]"])
    assert cfg.optim.lr == 5e-5 and cfg.optim.betas == (0.9, 0.99)
    with pytest.raises(KeepError, match="optim.lr"):
        load_config(Run, write(tmp_path, "optim: {lr: 5e-5x}\n"))


# ------------------------------------------------------------------------------------------ ranges (keep.config.Range)
def _numeric_fields(cls, prefix=""):
    """(dotted key, annotation) of every int / float in a config tree, tuple elements included."""
    for name, tp in typing.get_type_hints(cls, include_extras=True).items():
        yield from _numeric(tp, f"{prefix}{name}")


def _numeric(tp, key):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (int, float) or (origin is Annotated and args[0] in (int, float)):
        yield key, tp
    elif dataclasses.is_dataclass(tp):
        yield from _numeric_fields(tp, f"{key}.")
    elif origin in (typing.Union, types.UnionType, tuple):
        for arg in args:
            if arg not in (type(None), Ellipsis):
                yield from _numeric(arg, key)


@pytest.mark.parametrize("cls", [TrainConfig, BenchmarkConfig], ids=lambda c: c.__name__)
def test_every_number_of_the_training_and_test_configs_has_a_range(cls):
    fields = list(_numeric_fields(cls))
    assert len(fields) >= 4  # the walk finds them (TrainConfig has dozens)
    unranged = [key for key, tp in fields if not any(isinstance(m, Range) for m in getattr(tp, "__metadata__", ()))]
    assert not unranged, f"numeric config fields without a keep.config.Range: {unranged}"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=-1", r"'train.lr' must be > 0, got -1.0"),
        ("train.lr=.nan", r"'train.lr' must be > 0, got nan"),
        ("data.batch_size=0", r"'data.batch_size' must be >= 1, got 0"),
        ("train.total_steps=0", r"'train.total_steps' must be >= 1"),
        ("train.total_steps=-5", r"'train.total_steps' must be >= 1, got -5"),
        ("train.ema_decay=1", r"'train.ema_decay' must be >= 0 and < 1"),
        ("train.betas=[0.9, 1.5]", r"'train.betas\[1\]' must be >= 0 and < 1"),
        ("train.seed=-1", r"'train.seed' must be between 0 and 4294967295"),
        ("log.every=0", r"'log.every' must be >= 1"),
        ("loss.gan=-0.1", r"'loss.gan' must be >= 0"),
        ("val={frame_range: [0, -2]}", r"'val.frame_range\[1\]' must be >= -1"),
        ("data.frame_range=[10, 5]", r"'data.frame_range' must be a \[start, stop\) pair with stop > start"),
        ("data.intervals=[]", r"'data.intervals' must be a non-empty list"),
        ("data.degradation.crf=[40, 30]", r"'data.degradation.crf' must be a \[low, high\] pair with low <= high"),
        ("data.degradation.noise_prob=1.5", r"'data.degradation.noise_prob' must be between 0 and 1"),
        ("data.degradation.kernel_size=20", r"'data.degradation.kernel_size' must be odd"),
        ("name=../..", r"'name' must be a plain folder name"),
        ("name=..", r"'name' must be a plain folder name"),
        ("name=runs/a", r"'name' must be a plain folder name"),
        ("name=''", r"'name' must be a plain folder name"),
    ],
)
def test_training_values_out_of_range_name_the_key_and_the_range(override, message):
    with pytest.raises(KeepError, match=message) as info:
        load_config(TrainConfig, None, [override])
    assert "\n" not in str(info.value)


def test_the_edges_of_each_range_are_accepted_and_python_built_configs_are_checked_too():
    edges = ["train.total_steps=1", "train.lr=1e-12", "train.ema_decay=0", "train.seed=4294967295", "name=a.b"]
    cfg = load_config(TrainConfig, None, [*edges, "data.degradation.crf=[0, 51]", "data.frame_range=[3, 4]"])
    assert cfg.train.total_steps == 1 and cfg.data.degradation.crf == (0, 51)
    bench = load_config(BenchmarkConfig, None, ["model.fidelity=0", "model.gain_context=0", "data.max_frames=0"])
    assert bench.model.fidelity == 0.0
    with pytest.raises(KeepError, match=r"'total_steps' must be >= 1, got 0"):
        TrainSection(total_steps=0)
    with pytest.raises(KeepError, match=r"'model.window' must be >= 1"):
        load_config(BenchmarkConfig, None, ["model.window=0"])
    with pytest.raises(KeepError, match=r"'name' must be a plain folder name"):
        BenchmarkConfig(name="../results")


# ------------------------------------------------------------------------------------------ unreadable files
@pytest.mark.parametrize(
    "content, message",
    [
        (bytes(range(256)) * 4, r"cannot parse config .*c\.yml: not UTF-8 text \(byte 0x80 at offset 128"),
        (b"\xff\xfe\x00", "cannot parse config .*: not UTF-16-LE text"),
        (b"name: a\x00b\n", r"character #x0000 .* is not allowed in YAML text"),
        (b"name: !!python/object/apply:os.system [ls]\n", r"line 1, column 7: could not determine a constructor"),
        (b"train: {lr: [1,\n", "cannot parse config .*: line 2, column 1: while parsing a flow"),
        (b"- a\n- b\n", "expected a mapping .* at the top level"),
    ],
    ids=["binary", "utf16-truncated", "nul", "unsafe-tag", "bad-yaml", "a-list"],
)
def test_a_file_that_is_not_yaml_text_is_one_line(tmp_path, content, message):
    path = tmp_path / "c.yml"
    path.write_bytes(content)
    with pytest.raises(KeepError, match=message) as info:
        load_config(TrainConfig, path)
    assert "\n" not in str(info.value)


def test_a_folder_or_an_unsafe_set_value_is_one_line(tmp_path):
    with pytest.raises(KeepError, match="config .* is a folder, not a YAML file"):
        load_config(TrainConfig, tmp_path)
    with pytest.raises(KeepError, match=r"--set name: cannot parse .*line 1, column 1: could not determine") as info:
        load_config(TrainConfig, None, ["name=!!python/object/apply:os.system [ls]"])
    assert "\n" not in str(info.value)
    (tmp_path / "empty.yml").write_bytes(b"")
    assert load_config(TrainConfig, tmp_path / "empty.yml") == TrainConfig()
