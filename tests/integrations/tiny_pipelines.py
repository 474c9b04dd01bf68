"""The test cases over the package's random-weight diffusers pipelines
(:mod:`sdsv.integrations.hf_diffusers.random_pipelines`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sdsv.integrations.hf_diffusers.random_pipelines import (
    flux_kwargs, flux_pipe, flux_transformer, sd3_kwargs, sd3_pipe, sd3_transformer, wan_kwargs, wan_pipe,
    wan_transformer,
)


@dataclass
class Case:
    name: str
    build: Callable          # seed -> pipeline
    transformer: Callable    # seed, **config overrides -> transformer
    kwargs: Callable         # batch, cfg -> call kwargs
    output_field: str        # "images" or "frames"


CASES = {
    "flux": Case("flux", flux_pipe, flux_transformer, flux_kwargs, "images"),
    "wan": Case("wan", wan_pipe, wan_transformer, wan_kwargs, "frames"),
    "sd3": Case("sd3", sd3_pipe, sd3_transformer, sd3_kwargs, "images"),
}
