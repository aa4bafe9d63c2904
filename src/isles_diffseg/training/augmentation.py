"""Random augmentation of whole training batches, run on the batch's own device.

Augmenting on the training device (after the batch is moved there) keeps the two CPU cores of a
loader from starving a GPU. Every random quantity is drawn once per sample (and per channel for the
intensity transforms) as one tensor, so there is no Python loop over samples, and every draw goes
through the caller's ``torch.Generator``: the same generator state gives the same output. Draw shapes
never depend on earlier outcomes, which keeps the stream of draws, hence the result, reproducible.

Built from ``conf/base/variants/augmentation/<name>.yml``; each section is one transform with its own
probability, an absent section (or probability 0) switches that transform off::

    flip_prob:        {h: 0.5, w: 0.5}                  # each axis on its own coin, never both at once
    rotation:         {prob: 0.5, degrees: 15}          # DEGREES; 15 means [-15, 15], or give [low, high]
    zoom:             {prob: 0.3, factor_range: [0.9, 1.1]}  # > 1 enlarges the content
    gamma:            {prob: 0.3, gamma_range: [0.7, 1.5]}   # per channel, on values clipped to [0, 1]
    intensity_scale:  {prob: 0.5, factor_range: [0.9, 1.1]}  # per channel
    intensity_shift:  {prob: 0.5, offset_range: [-0.1, 0.1]} # per channel
    blur:             {prob: 0.2, sigma_range: [0.5, 1.0]}   # pixels, per sample
    noise:            {prob: 0.3, std_range: [0.0, 0.05]}    # per sample

Spatial transforms (flips, rotation, zoom) are composed into ONE affine map per sample, so the image
is interpolated once; the mask goes through the same grid (bilinear, then re-binarised at 0.5, so it
stays exactly 0/1 and aligned with the image); outside the field of view is zero. Intensity
transforms touch the image only, in the order gamma, scale, shift, blur, noise: gamma first because it
expects the [0, 1] range of the intensity windows, noise last so that it stays white. Each modality
(CBF, Tmax, ...) gets its own gamma, scale and shift, unlike the earlier codebase, which jittered all
channels together; it also read rotation ranges as radians and flipped all axes at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TOKEN = "augCUSTOM"
_META_KEYS = frozenset({"name", "description", "token"})
# Gaussian kernels are cut at this many standard deviations (99.7 % of the mass).
_BLUR_TRUNCATE_SIGMAS = 3.0


# --------------------------------------------------------------------------- random draws


def _uniform(shape: Sequence[int], low: float, high: float, device: torch.device,
             generator: torch.Generator | None) -> Tensor:
    """Float32 draws, uniform in [low, high]."""
    return low + (high - low) * torch.rand(tuple(shape), device=device, generator=generator)


def _coin(shape: Sequence[int], prob: float, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Boolean draws, True with probability ``prob``."""
    return torch.rand(tuple(shape), device=device, generator=generator) < prob


def _working_dtype(tensor: Tensor) -> torch.dtype:
    """float64 stays float64; anything else (half, bfloat16, integer masks) is processed in float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- spatial transforms


class AffineDraw(NamedTuple):
    """Per-sample 2x2 matrices in centred PIXEL coordinates (x = width, y = height) mapping an output
    position to the input position it reads from, and which samples the transform actually changes."""

    matrix: Tensor  # (B, 2, 2) float32
    active: Tensor  # (B,) bool


class AffinePart(Protocol):
    """One spatial transform, contributing a per-sample matrix to the composed affine map."""

    def draw(self, batch: int, device: torch.device, generator: torch.Generator | None) -> AffineDraw: ...


@dataclass(frozen=True)
class RandomFlip:
    """Mirror along H and along W, each axis on its own coin (flipping both is then a 180 degree turn
    only when both coins come up, not always, as with MONAI's multi-axis ``RandFlip``)."""

    prob_h: float
    prob_w: float

    def draw(self, batch: int, device: torch.device, generator: torch.Generator | None) -> AffineDraw:
        flip_w = _coin((batch,), self.prob_w, device, generator)
        flip_h = _coin((batch,), self.prob_h, device, generator)
        signs = torch.stack([1.0 - 2.0 * flip_w.float(), 1.0 - 2.0 * flip_h.float()], dim=-1)
        return AffineDraw(torch.diag_embed(signs), flip_w | flip_h)


@dataclass(frozen=True)
class RandomRotation:
    """In-plane rotation by an angle uniform in ``degrees_range`` (DEGREES). A positive angle turns the
    content counter-clockwise as displayed with row 0 on top, i.e. +90 equals ``torch.rot90(x, 1, (-2, -1))``."""

    prob: float
    degrees_range: tuple[float, float]

    def draw(self, batch: int, device: torch.device, generator: torch.Generator | None) -> AffineDraw:
        active = _coin((batch,), self.prob, device, generator)
        angle = torch.deg2rad(_uniform((batch,), *self.degrees_range, device, generator))
        angle = torch.where(active, angle, torch.zeros_like(angle))
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=-2)
        return AffineDraw(matrix, active)


@dataclass(frozen=True)
class RandomZoom:
    """Isotropic zoom by a factor uniform in ``factor_range``; a factor > 1 enlarges the content."""

    prob: float
    factor_range: tuple[float, float]

    def draw(self, batch: int, device: torch.device, generator: torch.Generator | None) -> AffineDraw:
        active = _coin((batch,), self.prob, device, generator)
        factor = _uniform((batch,), *self.factor_range, device, generator)
        factor = torch.where(active, factor, torch.ones_like(factor))
        # The map goes from output to input position, hence the inverse factor.
        eye = torch.eye(2, device=device).expand(batch, 2, 2)
        return AffineDraw(eye / factor.view(batch, 1, 1), active)


@dataclass(frozen=True)
class RandomAffine2d:
    """Composes its parts into one affine map per sample and resamples image and mask once with it."""

    parts: tuple[AffinePart, ...]
    mask_threshold: float = 0.5

    def sample_theta(self, batch: int, height: int, width: int, device: torch.device,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """``(theta (B, 2, 3) for F.affine_grid, active (B,))``."""
        matrix = torch.eye(2, device=device).expand(batch, 2, 2)
        active = torch.zeros(batch, dtype=torch.bool, device=device)
        for part in self.parts:
            drawn = part.draw(batch, device, generator)
            matrix = matrix @ drawn.matrix
            active = active | drawn.active
        # affine_grid works in coordinates normalised to [-1, 1] on each axis; conjugating by the
        # half-sizes keeps rotations rigid on non-square images (otherwise they would shear).
        half_size = torch.tensor([width / 2.0, height / 2.0], device=device)
        normalised = matrix * half_size.view(1, 1, 2) / half_size.view(1, 2, 1)
        theta = torch.cat([normalised, torch.zeros(batch, 2, 1, device=device)], dim=-1)
        return theta, active

    def __call__(self, image: Tensor, mask: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        batch, _, height, width = image.shape
        theta, active = self.sample_theta(batch, height, width, image.device, generator)
        dtype = _working_dtype(image)
        grid = F.affine_grid(theta.to(dtype), [batch, 1, height, width], align_corners=False)
        warped_image = F.grid_sample(image.to(dtype), grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False).to(image.dtype)
        warped_mask = F.grid_sample(mask.to(dtype), grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
        warped_mask = (warped_mask > self.mask_threshold).to(mask.dtype)
        # Samples that drew no spatial change keep their exact values instead of a resampled copy.
        keep = active.view(batch, 1, 1, 1)
        return torch.where(keep, warped_image, image), torch.where(keep, warped_mask, mask)


# --------------------------------------------------------------------------- intensity transforms


class IntensityTransform(Protocol):
    """A random change of image intensities (the mask is never touched)."""

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor: ...


@dataclass(frozen=True)
class RandomChannelGamma:
    """``clip(x, 0, 1) ** gamma`` with gamma uniform in ``gamma_range``, per sample AND channel."""

    prob: float
    gamma_range: tuple[float, float]

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        per_channel = (*image.shape[:2], 1, 1)
        apply = _coin(per_channel, self.prob, image.device, generator)
        gamma = _uniform(per_channel, *self.gamma_range, image.device, generator).to(image.dtype)
        return torch.where(apply, image.clamp(0.0, 1.0).pow(gamma), image)


@dataclass(frozen=True)
class RandomChannelScale:
    """``x * factor`` with factor uniform in ``factor_range``, per sample AND channel."""

    prob: float
    factor_range: tuple[float, float]

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        per_channel = (*image.shape[:2], 1, 1)
        apply = _coin(per_channel, self.prob, image.device, generator)
        factor = _uniform(per_channel, *self.factor_range, image.device, generator).to(image.dtype)
        return torch.where(apply, image * factor, image)


@dataclass(frozen=True)
class RandomChannelShift:
    """``x + offset`` with offset uniform in ``offset_range``, per sample AND channel."""

    prob: float
    offset_range: tuple[float, float]

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        per_channel = (*image.shape[:2], 1, 1)
        apply = _coin(per_channel, self.prob, image.device, generator)
        offset = _uniform(per_channel, *self.offset_range, image.device, generator).to(image.dtype)
        return torch.where(apply, image + offset, image)


def gaussian_kernels_1d(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels, one row per sigma: ``(N,) -> (N, 2 * radius + 1)``."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    weights = torch.exp(-0.5 * (offsets.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return weights / weights.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class RandomGaussianBlur:
    """Gaussian blur with sigma (pixels) uniform in ``sigma_range``, one sigma per sample shared by its
    channels (blur stands for the resolution of the acquisition, common to all maps computed from it).
    Separable: one grouped convolution along W, one along H, with replicated borders."""

    prob: float
    sigma_range: tuple[float, float]

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        batch, channels, height, width = image.shape
        apply = _coin((batch,), self.prob, image.device, generator)
        sigma = _uniform((batch,), *self.sigma_range, image.device, generator)
        radius = max(1, math.ceil(_BLUR_TRUNCATE_SIGMAS * self.sigma_range[1]))
        dtype = _working_dtype(image)
        kernels = gaussian_kernels_1d(sigma.to(dtype), radius).repeat_interleave(channels, dim=0)
        groups = batch * channels
        # Every (sample, channel) plane becomes its own group of a single grouped convolution.
        planes = image.to(dtype).reshape(1, groups, height, width)
        planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"),
                          kernels.view(groups, 1, 1, -1), groups=groups)
        planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"),
                          kernels.view(groups, 1, -1, 1), groups=groups)
        blurred = planes.reshape(batch, channels, height, width).to(image.dtype)
        return torch.where(apply.view(batch, 1, 1, 1), blurred, image)


@dataclass(frozen=True)
class RandomGaussianNoise:
    """Additive zero-mean Gaussian noise, std uniform in ``std_range``, one std per sample."""

    prob: float
    std_range: tuple[float, float]

    def __call__(self, image: Tensor, generator: torch.Generator | None) -> Tensor:
        batch = image.shape[0]
        apply = _coin((batch,), self.prob, image.device, generator)
        std = _uniform((batch,), *self.std_range, image.device, generator)
        std = torch.where(apply, std, torch.zeros_like(std)).view(batch, 1, 1, 1)
        noise = torch.randn(image.shape, device=image.device, generator=generator)
        return image + (noise * std).to(image.dtype)


# --------------------------------------------------------------------------- the batch augmentation


@dataclass(frozen=True)
class BatchAugmentation:
    """``(image (B, C, H, W), mask (B, 1, H, W), generator) -> (image, mask)``, shapes and dtypes kept.

    With no transform configured (preset ``none``) it returns its inputs as they are and draws nothing.
    The generator must live on the batch's device (``torch.Generator(device=image.device)``).
    """

    spatial: RandomAffine2d | None = None
    intensity: tuple[IntensityTransform, ...] = ()
    token: str = DEFAULT_TOKEN

    @property
    def is_identity(self) -> bool:
        return self.spatial is None and not self.intensity

    def __call__(self, image: Tensor, mask: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if image.ndim != 4 or mask.ndim != 4 or mask.shape[1] != 1 or image.shape[-2:] != mask.shape[-2:] \
                or image.shape[0] != mask.shape[0]:
            raise ValueError(f"expected image (B, C, H, W) and mask (B, 1, H, W), got {tuple(image.shape)} "
                             f"and {tuple(mask.shape)}")
        if self.is_identity:
            return image, mask
        if generator is not None and generator.device.type != image.device.type:
            raise ValueError(f"the generator lives on {generator.device}, the batch on {image.device}: "
                             "create it with torch.Generator(device=image.device)")
        if self.spatial is not None:
            image, mask = self.spatial(image, mask, generator)
        for transform in self.intensity:
            image = transform(image, generator)
        return image, mask


# --------------------------------------------------------------------------- config parsing


class _SectionReader:
    """Reads one section of an augmentation variant, raising ValueError that names ``variant: key``."""

    def __init__(self, variant: str, key: str, section: Any, allowed: set[str]):
        self.where = f"augmentation variant {variant!r}: {key}"
        if not isinstance(section, Mapping):
            raise ValueError(f"{self.where} must be a mapping, got {type(section).__name__}")
        unknown = set(section) - allowed
        if unknown:
            raise ValueError(f"{self.where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
        missing = allowed - set(section)
        if missing:
            raise ValueError(f"{self.where}: missing keys {sorted(missing)}")
        self.section = section

    def number(self, key: str) -> float:
        value = self.section[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{self.where}.{key} must be a finite number, got {value!r}")
        return float(value)

    def probability(self, key: str = "prob") -> float:
        value = self.number(key)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{self.where}.{key} must be a probability in [0, 1], got {value}")
        return value

    def interval(self, key: str, *, minimum: float | None = None, above: float | None = None) -> tuple[float, float]:
        """A ``[low, high]`` pair with low <= high, optionally bounded below (``minimum``: >=, ``above``: >)."""
        value = self.section[key]
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
            raise ValueError(f"{self.where}.{key} must be a [low, high] pair, got {value!r}")
        low, high = (self._finite(key, v) for v in value)
        if low > high:
            raise ValueError(f"{self.where}.{key}: low {low} is above high {high}")
        if minimum is not None and low < minimum:
            raise ValueError(f"{self.where}.{key} must be >= {minimum}, got {[low, high]}")
        if above is not None and low <= above:
            raise ValueError(f"{self.where}.{key} must be > {above}, got {[low, high]}")
        return low, high

    def symmetric_or_interval(self, key: str) -> tuple[float, float]:
        """A number ``d`` (read as ``[-d, d]``) or a ``[low, high]`` pair."""
        value = self.section[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            bound = self.number(key)
            if bound < 0:
                raise ValueError(f"{self.where}.{key} must be >= 0 when given as one number, got {bound}")
            return -bound, bound
        return self.interval(key)

    def _finite(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{self.where}.{key} must hold finite numbers, got {value!r}")
        return float(value)


# Section name -> (its keys, the transform built from them); the order is the order in which they run.
_SPATIAL_SECTIONS: dict[str, tuple[set[str], Callable[[_SectionReader], Any]]] = {
    "flip_prob": ({"h", "w"}, lambda r: RandomFlip(prob_h=r.probability("h"), prob_w=r.probability("w"))),
    "rotation": ({"prob", "degrees"}, lambda r: RandomRotation(r.probability(), r.symmetric_or_interval("degrees"))),
    "zoom": ({"prob", "factor_range"}, lambda r: RandomZoom(r.probability(), r.interval("factor_range", above=0.0))),
}
_INTENSITY_SECTIONS: dict[str, tuple[set[str], Callable[[_SectionReader], Any]]] = {
    "gamma": ({"prob", "gamma_range"},
              lambda r: RandomChannelGamma(r.probability(), r.interval("gamma_range", above=0.0))),
    "intensity_scale": ({"prob", "factor_range"},
                        lambda r: RandomChannelScale(r.probability(), r.interval("factor_range", above=0.0))),
    "intensity_shift": ({"prob", "offset_range"},
                        lambda r: RandomChannelShift(r.probability(), r.interval("offset_range"))),
    "blur": ({"prob", "sigma_range"},
             lambda r: RandomGaussianBlur(r.probability(), r.interval("sigma_range", above=0.0))),
    "noise": ({"prob", "std_range"},
              lambda r: RandomGaussianNoise(r.probability(), r.interval("std_range", minimum=0.0))),
}
AUGMENTATION_SECTIONS: tuple[str, ...] = (*_SPATIAL_SECTIONS, *_INTENSITY_SECTIONS)


def _switched_off(transform: Any) -> bool:
    """A transform whose probabilities are all 0 is left out, so that it draws nothing."""
    probs = (transform.prob_h, transform.prob_w) if isinstance(transform, RandomFlip) else (transform.prob,)
    return not any(probs)


def _build_sections(variant: str, config: Mapping[str, Any],
                    sections: dict[str, tuple[set[str], Callable[[_SectionReader], Any]]]) -> tuple[Any, ...]:
    built = []
    for key, (allowed, build) in sections.items():
        if key in config:
            transform = build(_SectionReader(variant, key, config[key], allowed))
            if not _switched_off(transform):
                built.append(transform)
    return tuple(built)


def build_augmentation(config: Mapping[str, Any]) -> BatchAugmentation:
    """The batch augmentation described by one augmentation variant (see the module docstring)."""
    variant = str(config.get("name", "?"))
    unknown = set(config) - _META_KEYS - set(AUGMENTATION_SECTIONS)
    if unknown:
        raise ValueError(f"augmentation variant {variant!r}: unknown keys {sorted(unknown)} "
                         f"(allowed: {sorted(_META_KEYS | set(AUGMENTATION_SECTIONS))})")
    token = config.get("token", DEFAULT_TOKEN)
    if not isinstance(token, str) or not token:
        raise ValueError(f"augmentation variant {variant!r}: token must be a non-empty string, got {token!r}")
    spatial_parts = _build_sections(variant, config, _SPATIAL_SECTIONS)
    return BatchAugmentation(
        spatial=RandomAffine2d(spatial_parts) if spatial_parts else None,
        intensity=_build_sections(variant, config, _INTENSITY_SECTIONS),
        token=token,
    )
