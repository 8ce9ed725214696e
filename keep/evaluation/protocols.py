"""Named test protocols: how a test set's LQ is synthesised and how the benchmark restores it.

`scripts/make_test_set.py --protocol NAME` writes the LQ half with `degradation`; the config
`configs/<config>` runs the benchmark with the matching windowing. docs/benchmark.md says which
published number each protocol corresponds to.

`vfhq_easy` (the paper's VFHQ table): the released test option file names its LQ folder
`BlindLR_128x128_easy_Blur5-10_Noise0-10_CRF18-25` and restores 20-frame windows with
`padding: reflection_circle`. From the name: blur sigma 5-10, Gaussian noise sigma 0-10, H.264 with
CRF 18-25, 128 px LQ (x4 from 512 GT). Not in the name, taken from the released training options
(the closest published recipe): the 21-tap kernel, isotropic / anisotropic kernels 0.7 / 0.3 (here
seven `iso` and three `aniso` entries, drawn uniformly), the resize kernel among area / bilinear /
bicubic. No Poisson noise, no second noise step, no JPEG: the name lists one noise and a codec only.

`dicface` (the sets of DVFace's Table 1 where only GT is at hand, e.g. HDTF): DicFace's released
options for its VFHQ-Test set (`VFHQRealDegradationDatasetNew`, val): 21-tap iso / aniso kernels 0.7 /
0.3 with sigma 0.1-10, x4 down with area / bilinear / bicubic at 0.2 / 0.4 / 0.4, Gaussian noise 0-10
(grey with probability 0.5 there; this pipeline's noise is per channel), H.264 CRF 18-25. DicFace then
upsamples the LQ back to GT size and aligns both with the clip's 5-point landmark file; here LQ stays
x4 smaller and the methods upsample it (docs/benchmark.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import KeepError


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    degradation: dict[str, Any] = field(default_factory=dict)  # DegradationConfig fields (before --set)
    config: str = "configs/test_vfhq.yml"  # the benchmark config that restores it as published
    published: str = ""  # which published numbers it corresponds to


PROTOCOLS: dict[str, Protocol] = {
    "vfhq_easy": Protocol(
        name="vfhq_easy",
        description="KEEP's released test set: blur sigma 5-10, noise 0-10, H.264 CRF 18-25, x4 to 128 px",
        degradation={
            "scale": 4,
            "blur_prob": 1.0,
            "kernel_size": 21,
            "kernel_types": ["iso"] * 7 + ["aniso"] * 3,  # iso 0.7 / aniso 0.3 (released options)
            "blur_sigma": [5.0, 10.0],
            "noise_prob": 1.0,
            "noise_sigma": [0.0, 10.0],
            "poisson_prob": 0.0,
            "resize_modes": ["area", "bilinear", "bicubic"],
            "noise2_prob": 0.0,
            "jpeg_prob": 0.0,
            "codec_prob": 1.0,
            "codecs": ["libx264"],
            "crf": [18, 25],
        },
        config="configs/test_vfhq_easy.yml",
        published="the paper's VFHQ table (docs/benchmark.md): the KEEP row, PSNR 27.99 / SSIM 0.827 / "
        "LPIPS 0.162 / IDS 0.796 / AKD 8.82",
    ),
    "dicface": Protocol(
        name="dicface",
        description="DicFace's released VFHQ-Test degradation: blur sigma 0.1-10, noise 0-10, H.264 CRF 18-25, x4",
        degradation={
            "scale": 4,
            "blur_prob": 1.0,
            "kernel_size": 21,
            "kernel_types": ["iso"] * 7 + ["aniso"] * 3,  # iso 0.7 / aniso 0.3
            "blur_sigma": [0.1, 10.0],
            "noise_prob": 1.0,
            "noise_sigma": [0.0, 10.0],
            "poisson_prob": 0.0,
            "resize_modes": ["area", "bilinear", "bilinear", "bicubic", "bicubic"],  # 0.2 / 0.4 / 0.4
            "noise2_prob": 0.0,
            "jpeg_prob": 0.0,
            "codec_prob": 1.0,
            "codecs": ["libx264"],
            "crf": [18, 25],
        },
        config="configs/test_dvface.yml",
        published="DVFace Table 1 (VFHQ-Test, HDTF) as far as DVFace synthesised its LQ as DicFace did: the "
        "parameters are DicFace's released options (options/clip5_bs2_512_align_nofix_multiscale.yaml, val set), "
        "DVFace's own recipe could not be read here; docs/benchmark.md",
    ),
    "training": Protocol(
        name="training",
        description="this project's training degradation defaults (keep.data.DegradationConfig())",
        degradation={},
        config="configs/test_vfhq.yml",
        published="none: a project setting, not a published protocol",
    ),
}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise KeepError(f"unknown test protocol '{name}'; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
