"""The sampling fast path: the network ``torch.compile``d for one fixed batch shape.

A DDIM-50 prediction calls the network 50 times per batch with the same shapes, which is what a compiled
graph (and, with ``reduce-overhead``, a CUDA graph of the whole forward) pays back. The wrapper always
calls the compiled network with exactly ``batch_size`` samples: a smaller batch (the last one of a run)
is padded with zeros and the padding's outputs dropped, a larger one is split. So one graph serves every
call, without a recompilation for the last batch, whatever the number of slices.

``compile_mode`` (``inductor`` backend only; other backends, e.g. ``aot_eager`` in the CPU tests, take none):

* ``default``: inductor kernels; the safe choice, its compilation is the shortest;
* ``reduce-overhead``: the same plus CUDA graphs (one replay per forward instead of hundreds of kernel
  launches; costs a copy of the inputs into static buffers and memory for the graph pool);
* ``max-autotune-no-cudagraphs``: benchmarks kernel configurations while compiling (minutes, once per
  shape and machine; the inductor cache keeps them);
* ``max-autotune``: both.

The compiled graph is cached by inductor on disk (``TORCHINDUCTOR_FX_GRAPH_CACHE``, on by default, under
``TORCHINDUCTOR_CACHE_DIR``), so a second process compiling the same model and batch is much faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from isles_diffseg.diffusion.gaussian import unpack_model_output
from isles_diffseg.runtime import check_compile_mode, compile_module, fast_path_enabled, uses_cuda_graphs


@dataclass(frozen=True)
class SamplingFastPath:
    """Whether and how the network is compiled for prediction (``evaluation.fast_path`` and friends)."""

    enabled: bool = False
    compile_mode: str = "default"
    compile_backend: str | Callable[..., Any] = "inductor"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_compile_mode(self.compile_mode)

    @property
    def cuda_graphs(self) -> bool:
        """Whether the compiled network replays CUDA graphs (``reduce-overhead``, ``max-autotune``)."""
        return self.enabled and uses_cuda_graphs(self.compile_mode, self.compile_backend)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], device: torch.device) -> SamplingFastPath:
        """``fast_path: auto`` is on for CUDA only (:func:`fast_path_enabled`), so CPU runs stay eager."""
        return cls(enabled=fast_path_enabled(settings.get("fast_path", "auto"), device),
                   compile_mode=str(settings.get("compile_mode", "default")),
                   compile_backend=settings.get("compile_backend", "inductor"),
                   channels_last=bool(settings.get("channels_last", False)))

    def wrap(self, model: nn.Module, batch_size: int) -> nn.Module | FixedBatchModel:
        """The model itself when the fast path is off, else a :class:`FixedBatchModel` of it.

        The wrapper is kept on the model and reused for the same settings and batch, so the nodes of one
        ``kedro run`` (threshold sweep, test predictions) share one compiled graph."""
        if not self.enabled:
            return model
        cache = model.__dict__.setdefault("_sampling_fast_path", {})
        key = (self.compile_mode, self.compile_backend, self.channels_last, batch_size)
        if key not in cache:
            cache[key] = FixedBatchModel(model, batch_size, mode=self.compile_mode, backend=self.compile_backend,
                                         channels_last=self.channels_last)
        return cache[key]


class FixedBatchModel:
    """Calls ``torch.compile(model)`` with always ``batch_size`` samples; returns the model's output tensor.

    Every positional argument is a tensor whose first dimension is the batch (``x_t, t, image`` for a
    denoiser, ``image`` for a segmentation network). The model is put in eval mode: prediction only.
    """

    def __init__(self, model: nn.Module, batch_size: int, *, mode: str = "default",
                 backend: str | Callable[..., Any] = "inductor", channels_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.channels_last = channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.compiled = compile_module(model, mode, backend, dynamic=False)
        # CUDA graph outputs live in a static buffer that the next replay overwrites: mark each call as a
        # new step and copy the outputs out (one mask channel per sample: cheap)
        self.cuda_graphs = uses_cuda_graphs(mode, backend)

    def __call__(self, *inputs: Tensor) -> Tensor:
        total = inputs[0].shape[0]
        if any(x.shape[0] != total for x in inputs):
            raise ValueError(f"inputs must share the batch dimension, got {[tuple(x.shape) for x in inputs]}")
        outputs = [self._call_full(tuple(x[start : start + self.batch_size] for x in inputs))
                   for start in range(0, total, self.batch_size)]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _call_full(self, inputs: tuple[Tensor, ...]) -> Tensor:
        count = inputs[0].shape[0]
        if count < self.batch_size:  # zeros are valid inputs (t = 0 is a timestep); their outputs are dropped
            inputs = tuple(torch.cat([x, x.new_zeros((self.batch_size - count, *x.shape[1:]))]) for x in inputs)
        if self.channels_last:
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        output, _ = unpack_model_output(self.compiled(*inputs))
        output = output[:count]
        return output.clone() if self.cuda_graphs else output
