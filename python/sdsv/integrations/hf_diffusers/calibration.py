""":func:`sdsv.calibrate` on a diffusers pipeline: the reference is ``pipe(...)`` as it is, the
candidates ``pipe(...)`` with :func:`sdsv.enable` and the policy tried (with the pipeline's own
SDSV settings, if it was enabled: its draft, scheduler conversion, forecast order, ...); those
settings are put back afterwards. Everything is checked before the reference is sampled."""

from __future__ import annotations

import dataclasses
import inspect

import torch

from ...errors import RefusedError
from .families import family_of
from .hook import disable, enable, enabled_config, scheduler_and_solver

#: the call arguments calibrate sets on every call, so neither a prompt dict nor the call's may
OWNED = ("generator", "output_type", "num_inference_steps", "prompt")


class DiffusersAdapter:
    """:func:`sdsv.calibrate`'s runs (:class:`sdsv.calibrate.CalibrationRuns`) on a diffusers
    pipeline. One call per prompt (prompt ``i``: a str, or a dict of that call's arguments such
    as ``prompt_embeds``; ``generator`` seeded ``seed + i``), decoded to ``output_type="pt"``
    (values in [0, 1]); a call may return several images (a batch of embeddings,
    ``num_images_per_prompt``). Cost = target evaluations of states per image returned
    (``num_steps`` for the reference, ``pipe.sdsv_stats.target_evals`` with SDSV)."""

    def __init__(self, pipe, prompts, seed: int, num_steps: int | None, call_kwargs: dict):
        try:
            family_of(pipe)
        except RefusedError as e:
            raise TypeError(f"pipe has no calibration_runs method and is not a pipeline sdsv.enable supports: {e}") \
                from None
        for k in OWNED:
            if k in call_kwargs:
                raise TypeError(f"calibrate sets {k}= itself (prompts go in the prompts list, as strings or as "
                                "dicts of per-image call arguments such as prompt_embeds)")
        self.images = [self._image(i, p, call_kwargs) for i, p in enumerate(prompts)]
        signature = inspect.signature(type(pipe).__call__)
        for i, image in enumerate(self.images):
            try:
                signature.bind(pipe, **image, **call_kwargs)
            except TypeError as e:
                raise TypeError(f"calibrate: {type(pipe).__name__}(...) refuses prompts[{i}] with the call's "
                                f"arguments: {e}") from None
        if num_steps is None:
            default = signature.parameters.get("num_inference_steps")
            if default is None or not isinstance(default.default, int):
                raise ValueError(f"num_steps: {type(pipe).__name__} has no default num_inference_steps, pass num_steps=")
            num_steps = default.default
        self.pipe, self.num_steps, self.kwargs = pipe, num_steps, call_kwargs
        self.seeds = [seed + i for i in range(len(prompts))]
        self.config = enabled_config(pipe)
        #: whether the candidates draft with the forecast self-draft (calibrate's default family corrects only then)
        self.self_draft = self.config is None or isinstance(self.config.draft, str)
        try:  # what enable would refuse at the first candidate, refused before the reference is sampled
            scheduler_and_solver(pipe.scheduler, self.config is not None and self.config.convert_scheduler)
        except RefusedError as e:
            if self.config is not None:
                raise
            raise RefusedError(f"{e}. calibrate samples with sdsv.enable's settings: enable the pipeline first with "
                               "the ones it needs, e.g. sdsv.enable(pipe, convert_scheduler=True); calibrate keeps "
                               "them and puts them back") from None

    @staticmethod
    def _image(i: int, prompt, call_kwargs: dict) -> dict:
        """Prompt ``i`` as the arguments of its call."""
        if isinstance(prompt, str):
            return {"prompt": prompt}
        if not all(isinstance(k, str) for k in prompt):
            raise TypeError(f"prompts[{i}] must be a dict of call arguments by name, got keys {list(prompt)}")
        owned = [k for k in OWNED if k in prompt and k != "prompt"]
        if owned:
            raise TypeError(f"prompts[{i}] sets {', '.join(owned)}, which calibrate sets itself on every call "
                            "(num_steps= sets the step count, seed= the generators)")
        both = sorted(set(prompt) & set(call_kwargs))
        if both:
            raise TypeError(f"prompts[{i}] and the call's arguments both give {', '.join(both)}: give each once")
        return dict(prompt)

    def _images(self, with_sdsv: bool) -> tuple[torch.Tensor, float]:
        out, evals = [], 0
        for image, s in zip(self.images, self.seeds):
            result = self.pipe(**image, **self.kwargs, num_inference_steps=self.num_steps, output_type="pt",
                               generator=torch.Generator().manual_seed(s))
            images = result[0].float().cpu()
            out.append(images)
            evals += self.pipe.sdsv_stats.target_evals if with_sdsv else self.num_steps * images.shape[0]
        images = torch.cat(out)
        return images, evals / images.shape[0]

    def reference(self):
        disable(self.pipe)
        try:
            return self._images(with_sdsv=False)
        finally:
            self._restore()

    def run(self, policy):
        enable(self.pipe, policy=policy, **self._settings(policy))
        try:
            return self._images(with_sdsv=True)
        finally:
            disable(self.pipe)
            self._restore()

    def _settings(self, policy) -> dict:
        """The pipeline's own SDSV settings but its policy (none when it was not enabled); its
        verification options only for a policy that verifies (the others would say they ignore them)."""
        if self.config is None:
            return {}
        skip = {"policy"} | (set() if policy.verifies else {"accept", "verify"})
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config) if f.name not in skip}

    def _restore(self) -> None:
        if self.config is not None:
            enable(self.pipe, **{f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)})
