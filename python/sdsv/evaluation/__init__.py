"""``sdsv eval``: the paper's tables and figures, measured on the shipped tiny models."""

from .cost import CountingPipeline, FlopTable
from .experiments import EXPERIMENTS, EvalConfig, ExperimentResult
from .features import (
    ClassifierFeatures, frechet_distance, frechet_distance_from_stats, inception_score, perceptual_distance,
    prompt_alignment,
)
from .methods import Method
from .runner import MethodRun, Runner, balanced_prompts

__all__ = [
    "EXPERIMENTS", "ClassifierFeatures", "CountingPipeline", "EvalConfig", "ExperimentResult", "FlopTable", "Method",
    "MethodRun", "Runner", "balanced_prompts", "frechet_distance", "frechet_distance_from_stats", "inception_score",
    "perceptual_distance", "prompt_alignment",
]
