"""GMFlow: optical flow as global matching (Xu et al., "GMFlow: Learning Optical Flow via Global
Matching", CVPR 2022), the flow network the released KEEP was trained and evaluated with
(docs/network.md "Flow"). Written for this project from the paper and the description of its public
code (haofeixu/gmflow, Apache-2.0); the weights come from a KEEP checkpoint's `flownet.model.*`.

The released setting (`gmflow_sintel`, inference): one scale, 128 feature channels at 1/8 of the
input, 6 transformer layers with one head and attention in 2 x 2 windows (shifted on every other
layer), global correlation and global flow propagation, convex upsampling x8.

Parameter names are GMFlow's own (`backbone.layer1.0.conv1.weight`, `transformer.layers.0.self_attn
.q_proj.weight`, ...), so a KEEP checkpoint's `flownet.model.<name>` maps 1:1 onto `<name>`
(`keep.checkpoint`), and the standalone GMFlow checkpoints (`{"model": state}`) load as well.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import KeepError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Added to the scores of token pairs that a shifted window joins across the image border
# (Swin's mask value): exp(-100) is 4e-44, i.e. those pairs do not attend to each other.
SHIFT_MASK_VALUE = -100.0


# ------------------------------------------------------------------------------------------ backbone
class ResidualBlock(nn.Module):
    """Two 3x3 convs, each followed by instance norm (no affine) and ReLU, plus the input (through a
    1x1 conv and instance norm when the stride or width changes); ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride), nn.InstanceNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + y)


class Backbone(nn.Module):
    """Image `(N, 3, H, W)` -> features `(N, channels, H/8, W/8)`: a 7x7 stride-2 stem and three
    stages of two residual blocks (64, 96, 128 wide; strides 1, 2, 2), then a 1x1 conv."""

    def __init__(self, channels: int = 128, widths: tuple[int, int, int] = (64, 96, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        stages, previous = [], widths[0]
        for width, stride in zip(widths, (1, 2, 2), strict=True):
            stages.append(nn.Sequential(ResidualBlock(previous, width, stride=stride), ResidualBlock(width, width)))
            previous = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(widths[-1], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.instance_norm(self.conv1(x)))  # 1/2
        x = self.layer3(self.layer2(self.layer1(x)))  # 1/2, 1/4, 1/8
        return self.conv2(x)


# ------------------------------------------------------------------------------------------ position
def sine_position(height: int, width: int, channels: int, device: torch.device) -> torch.Tensor:
    """DETR's sine position encoding of a `height x width` grid -> `(channels, height, width)`.

    Row and column indices (1-based) are normalised to (0, 2 pi]; each takes `channels / 2` channels,
    rows first, as sin / cos pairs at wavelengths 10000 ** (2 i / (channels / 2)).
    """
    half = channels // 2
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    rows = rows / (rows[-1] + 1e-6) * (2 * math.pi)
    cols = cols / (cols[-1] + 1e-6) * (2 * math.pi)
    steps = torch.arange(half, dtype=torch.float32, device=device)
    wavelengths = 10000 ** (2 * torch.div(steps, 2, rounding_mode="floor") / half)

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (L,) -> (L, half): sin, cos, sin, cos, ...
        angles = positions[:, None] / wavelengths
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=-1).flatten(1)

    pos_y = encode(rows)[:, None, :].expand(height, width, half)
    pos_x = encode(cols)[None, :, :].expand(height, width, half)
    return rearrange(torch.cat((pos_y, pos_x), dim=-1), "h w c -> c h w")


def add_window_position(features: torch.Tensor, splits: int) -> torch.Tensor:
    """Add the position encoding of one attention window to every window: `(N, C, H, W)`."""
    _, channels, height, width = features.shape
    position = sine_position(height // splits, width // splits, channels, features.device)
    return features + position.repeat(1, splits, splits)


# ------------------------------------------------------------------------------------------ attention
def to_windows(x: torch.Tensor, splits: int) -> torch.Tensor:
    """`(B, H, W, C)` -> `(B * splits^2, H/splits * W/splits, C)`, windows row-major."""
    return rearrange(x, "b (kh h) (kw w) c -> (b kh kw) (h w) c", kh=splits, kw=splits)


def from_windows(x: torch.Tensor, splits: int, height: int) -> torch.Tensor:
    """Inverse of `to_windows` -> `(B, H, W, C)`."""
    return rearrange(x, "(b kh kw) (h w) c -> b (kh h) (kw w) c", kh=splits, kw=splits, h=height // splits)


def shifted_window_mask(height: int, width: int, splits: int, device: torch.device) -> torch.Tensor:
    """Scores to add in shifted windows `(splits^2, L, L)`: after the cyclic shift by half a window, a
    window may join pieces from opposite image borders; tokens of different pieces must not attend."""
    window_h, window_w = height // splits, width // splits
    shift_h, shift_w = window_h // 2, window_w // 2

    def piece(size: int, window: int, shift: int) -> torch.Tensor:  # 0, 1, 2 along one axis
        index = torch.arange(size, device=device)
        return (index >= size - window).long() + (index >= size - shift).long()

    label = piece(height, window_h, shift_h)[:, None] * 3 + piece(width, window_w, shift_w)[None, :]
    label = to_windows(label[None, :, :, None].float(), splits)[..., 0]  # (splits^2, L)
    different = label[:, :, None] != label[:, None, :]
    return torch.zeros(different.shape, device=device).masked_fill(different, SHIFT_MASK_VALUE)


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, size: tuple[int, int], splits: int, shift: bool
) -> torch.Tensor:
    """Single-head attention within `splits x splits` windows of the `size` grid, windows shifted by
    half their size when `shift` (Swin). q, k, v `(B, H*W, C)` -> `(B, H*W, C)`; splits 1: global."""
    height, width = size
    channels = q.shape[-1]
    shift = shift and splits > 1
    offset = (height // splits // 2, width // splits // 2)
    grids = [rearrange(x, "b (h w) c -> b h w c", h=height) for x in (q, k, v)]
    if shift:
        grids = [torch.roll(x, shifts=(-offset[0], -offset[1]), dims=(1, 2)) for x in grids]
    q, k, v = (to_windows(x, splits) for x in grids)
    scores = q @ k.transpose(1, 2) / channels**0.5  # (B * splits^2, L, L)
    if shift:
        mask = shifted_window_mask(height, width, splits, q.device)
        scores = (rearrange(scores, "(b n) i j -> b n i j", n=splits**2) + mask).flatten(0, 1)
    out = from_windows(scores.softmax(dim=-1) @ v, splits, height)
    if shift:
        out = torch.roll(out, shifts=offset, dims=(1, 2))
    return rearrange(out, "b h w c -> b (h w) c")


class AttentionLayer(nn.Module):
    """`x + norm(merge(attention(x -> context)))`; with `ffn`, the message first passes
    `norm2(mlp([x, message]))` (2C -> 8C -> C, GELU)."""

    def __init__(self, channels: int, *, ffn: bool, expansion: int = 4):
        super().__init__()
        self.q_proj = nn.Linear(channels, channels, bias=False)
        self.k_proj = nn.Linear(channels, channels, bias=False)
        self.v_proj = nn.Linear(channels, channels, bias=False)
        self.merge = nn.Linear(channels, channels, bias=False)
        self.norm1 = nn.LayerNorm(channels)
        self.mlp = self.norm2 = None
        if ffn:
            hidden = 2 * channels * expansion
            self.mlp = nn.Sequential(
                nn.Linear(2 * channels, hidden, bias=False), nn.GELU(), nn.Linear(hidden, channels, bias=False)
            )
            self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, **window) -> torch.Tensor:
        """x, context `(B, H*W, C)`; window: `size`, `splits`, `shift` of `window_attention`."""
        message = window_attention(self.q_proj(x), self.k_proj(context), self.v_proj(context), **window)
        message = self.norm1(self.merge(message))
        if self.mlp is not None:
            message = self.norm2(self.mlp(torch.cat([x, message], dim=-1)))
        return x + message


class TransformerBlock(nn.Module):
    """Self-attention, then cross-attention to the other frame with the feed-forward network."""

    def __init__(self, channels: int, *, shift: bool, expansion: int = 4):
        super().__init__()
        self.shift = shift
        self.self_attn = AttentionLayer(channels, ffn=False)
        self.cross_attn_ffn = AttentionLayer(channels, ffn=True, expansion=expansion)

    def forward(self, x: torch.Tensor, other: torch.Tensor, *, size: tuple[int, int], splits: int) -> torch.Tensor:
        x = self.self_attn(x, x, size=size, splits=splits, shift=self.shift)
        return self.cross_attn_ffn(x, other, size=size, splits=splits, shift=self.shift)


class FeatureTransformer(nn.Module):
    """Both frames' features `(N, C, h, w)` updated together, symmetrically: each layer's cross-attention
    of one frame reads the other frame's features from the layer before."""

    def __init__(self, channels: int = 128, num_layers: int = 6, expansion: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(channels, shift=i % 2 == 1, expansion=expansion) for i in range(num_layers)
        )

    def forward(self, feature0: torch.Tensor, feature1: torch.Tensor, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = feature0.shape[-2:]
        # both frames in one batch: frame 0 attends to frame 1 and frame 1 to frame 0
        x = rearrange(torch.cat([feature0, feature1]), "n c h w -> n (h w) c")
        for layer in self.layers:
            other = torch.cat(x.chunk(2)[::-1])
            x = layer(x, other, size=size, splits=splits)
        x = rearrange(x, "n (h w) c -> n c h w", h=size[0])
        return x.chunk(2)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ matching
def pixel_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """`(H*W, 2)` pixel coordinates (x, y), row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def global_matching(feature0: torch.Tensor, feature1: torch.Tensor) -> torch.Tensor:
    """Flow from the softmax-weighted expected match of every frame-0 position over all of frame 1:
    features `(N, C, h, w)` -> flow `(N, 2, h, w)` in feature pixels."""
    n, channels, height, width = feature0.shape
    grid = pixel_grid(height, width, feature0.device)
    query = rearrange(feature0, "n c h w -> n (h w) c")
    key = rearrange(feature1, "n c h w -> n (h w) c")
    correlation = query @ key.transpose(1, 2) / channels**0.5  # (N, h*w, h*w)
    match = correlation.softmax(dim=-1) @ grid  # expected position in frame 1, (N, h*w, 2)
    return rearrange(match - grid, "n (h w) xy -> n xy h w", h=height)


class FlowPropagation(nn.Module):
    """Self-attention over frame-0 features applied to the flow: each position's flow becomes the
    attention-weighted flow of similar positions (fills in occluded / unmatched regions)."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)

    def forward(self, feature: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """feature `(N, C, h, w)`, flow `(N, 2, h, w)` -> `(N, 2, h, w)`."""
        channels, height = feature.shape[1], feature.shape[2]
        query = self.q_proj(rearrange(feature, "n c h w -> n (h w) c"))
        # The key projects the projected query, as the released weights were trained
        # (GMFlow's authors note it; both projections are linear, so nothing is lost).
        key = self.k_proj(query)
        value = rearrange(flow, "n xy h w -> n (h w) xy")
        out = (query @ key.transpose(1, 2) / channels**0.5).softmax(dim=-1) @ value
        return rearrange(out, "n (h w) xy -> n xy h w", h=height)


# ------------------------------------------------------------------------------------------ network
class GMFlowNet(nn.Module):
    """GMFlow in its released single-scale inference setting (module docstring)."""

    def __init__(
        self,
        *,
        feature_channels: int = 128,
        num_transformer_layers: int = 6,
        ffn_expansion: int = 4,
        upsample_factor: int = 8,
        attn_splits: int = 2,
    ):
        super().__init__()
        self.feature_channels = feature_channels
        self.upsample_factor = upsample_factor
        self.attn_splits = attn_splits
        self.backbone = Backbone(feature_channels)
        self.transformer = FeatureTransformer(feature_channels, num_transformer_layers, ffn_expansion)
        self.feature_flow_attn = FlowPropagation(feature_channels)
        self.upsampler = nn.Sequential(  # convex-combination weights from feature and flow
            nn.Conv2d(2 + feature_channels, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, upsample_factor**2 * 9, 1),
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (windows of the 1/8 feature map)."""
        return self.upsample_factor * self.attn_splits

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 255] (as the released KEEP hands frames to GMFlow) -> ImageNet statistics."""
        pixels = (frames + 1) / 2 * 255
        return (pixels / 255 - self.mean) / self.std

    def upsample(self, flow: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        """Convex upsampling (RAFT): every fine pixel is a softmax-weighted combination of the 3x3 coarse
        flows around its cell. flow `(N, 2, h, w)`, feature `(N, C, h, w)` -> `(N, 2, f*h, f*w)`, x f."""
        factor, height = self.upsample_factor, flow.shape[2]
        weights = self.upsampler(torch.cat([flow, feature], dim=1))
        weights = rearrange(weights, "n (k fy fx) h w -> n 1 k fy fx h w", k=9, fy=factor).softmax(dim=2)
        neighbours = F.unfold(factor * flow, kernel_size=3, padding=1)  # (N, 2 * 9, h*w)
        neighbours = rearrange(neighbours, "n (xy k) (h w) -> n xy k 1 1 h w", k=9, h=height)
        fine = (weights * neighbours).sum(dim=2)  # (N, 2, f, f, h, w)
        return rearrange(fine, "n xy fy fx h w -> n xy (h fy) (w fx)")

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Flow from `target` to `source`: frames `(N, 3, H, W)` in [-1, 1], H and W multiples of
        `size_multiple` -> `(N, 2, H, W)` in pixels (x, y); `source` sampled at p + flow(p) ~ target(p).
        KEEP asks for target = frame t, source = frame t-1 (`flownet(frame_t, frame_t-1)`)."""
        # 1. features of both frames, one backbone pass (instance norm: per image)
        features = self.backbone(self.normalise(torch.cat([target, source])))
        # 2. window position encoding, then the transformer updates both frames' features
        feature0, feature1 = add_window_position(features, self.attn_splits).chunk(2)
        feature0, feature1 = self.transformer(feature0, feature1, self.attn_splits)
        # 3. global matching: softmax over every position of the source frame
        flow = global_matching(feature0, feature1)
        # 4. propagation: self-attention of target features carries flow to where matching is weak
        flow = self.feature_flow_attn(feature0, flow)
        # 5. convex upsampling x8 back to the input resolution
        return self.upsample(flow, feature0)


# ------------------------------------------------------------------------------------------ estimator
class GMFlow:
    """GMFlow as a `keep.flow` estimator (see `keep.flow` for the call convention).

    Frame pairs go through the network `pairs_per_call` at a time, so memory is bounded by that batch
    whatever the window length (at 512 on CPU, peak RSS grew by 0.29 GiB for 1 pair per call and
    0.86 GiB for 4: the global correlation and the propagation hold 64 MiB per pair each). Frames
    whose sides are not multiples of 16 are padded (edge replicated) and the flow cropped back.
    state None: random weights (timing only).
    """

    name = "gmflow"

    def __init__(
        self,
        state: dict[str, torch.Tensor] | None = None,
        *,
        device: str | torch.device = "cpu",
        pairs_per_call: int = 4,
    ):
        self.net = GMFlowNet()
        if state is not None:
            try:
                self.net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise KeepError(f"GMFlow weights do not fit the GMFlow network: {str(exc)[:300]}") from None
        self.net.eval().requires_grad_(False).to(device)
        self.pairs_per_call = pairs_per_call

    @torch.no_grad()
    def __call__(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        device = next(self.net.parameters()).device
        height, width = target.shape[-2:]
        multiple = self.net.size_multiple
        pad = (0, (-width) % multiple, 0, (-height) % multiple)
        flows = []
        for start in range(0, len(target), self.pairs_per_call):
            pair = [x[start : start + self.pairs_per_call].to(device, torch.float32) for x in (target, source)]
            if any(pad):
                pair = [F.pad(x, pad, mode="replicate") for x in pair]
            flows.append(self.net(*pair)[..., :height, :width])
        return torch.cat(flows)
