""":func:`sdsv.calibrate` on a diffusers pipeline: the reference is ``pipe(...)`` as it is, the
candidates ``pipe(...)`` with :func:`sdsv.enable` and the policy tried; the pipeline's own SDSV
settings (if it was enabled) are put back afterwards."""

from __future__ import annotations

import dataclasses
import inspect

import torch

from .hook import disable, enable, enabled_config


class DiffusersAdapter:
    """:func:`sdsv.calibrate`'s runs (:class:`sdsv.calibrate.CalibrationRuns`) on a diffusers
    pipeline. One image per call (image ``i``: its prompt, ``generator`` seeded ``seed + i``), decoded to
    ``output_type="pt"`` (values in [0, 1]); cost = target evaluations of states per image
    (``num_steps`` for the reference, ``pipe.sdsv_stats.target_evals`` with SDSV)."""

    def __init__(self, pipe, prompts, seed: int, num_steps: int | None, call_kwargs: dict):
        for k in ("generator", "output_type", "num_inference_steps", "prompt"):
            if k in call_kwargs:
                raise TypeError(f"calibrate sets {k}= itself (prompts go in the prompts list, as strings or as "
                                "dicts of per-image call arguments such as prompt_embeds)")
        if num_steps is None:
            default = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
            if default is None or not isinstance(default.default, int):
                raise ValueError(f"{type(pipe).__name__} has no default num_inference_steps: pass num_steps=")
            num_steps = default.default
        self.pipe, self.num_steps, self.kwargs = pipe, int(num_steps), call_kwargs
        self.images = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
        self.seeds = [seed + i for i in range(len(prompts))]
        self.config = enabled_config(pipe)

    def _images(self, with_sdsv: bool) -> tuple[torch.Tensor, float]:
        out, evals = [], 0
        for image, s in zip(self.images, self.seeds):
            result = self.pipe(**image, **self.kwargs, num_inference_steps=self.num_steps, output_type="pt",
                               generator=torch.Generator().manual_seed(s))
            out.append(result[0].float().cpu())
            evals += self.pipe.sdsv_stats.target_evals if with_sdsv else self.num_steps
        return torch.cat(out), evals / len(self.images)

    def reference(self):
        disable(self.pipe)
        try:
            return self._images(with_sdsv=False)
        finally:
            self._restore()

    def run(self, policy):
        enable(self.pipe, policy=policy)
        try:
            return self._images(with_sdsv=True)
        finally:
            disable(self.pipe)
            self._restore()

    def _restore(self) -> None:
        if self.config is not None:
            enable(self.pipe, **{f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)})
