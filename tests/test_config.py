"""YAML -> typed dataclass config, overrides and errors."""

from dataclasses import dataclass, field

import pytest

from keep.archs.keep_arch import KEEPConfig
from keep.config import load_config, save_config
from keep.errors import KeepError


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
