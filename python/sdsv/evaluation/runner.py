"""Sampling a fixed evaluation set with one method, once, and measuring it.

An evaluation set is ``n`` (prompt, seed) pairs: prompt ``i`` cycles through all 48
(colour, shape) classes, seed ``i`` is ``seed0 + i``. Quality is measured on images sampled
in batches (an image does not depend on its batch mates: per-image noise generators,
per-sample windows in the sampler); latency is measured at batch 1 on the first few pairs,
the latency-bound setting speculative sampling is for, with all methods of an experiment
interleaved image by image so that machine noise hits them alike. Each method is sampled
once per run and shared by the experiments that use it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..acceptance import AcceptanceTest
from ..metrics import psnr, ssim
from ..plan import StagePlan
from ..tiny.data import COLOR_NAMES, SHAPES, class_index, make_batch, prompt_of
from ..tiny.weights import MODEL_NAMES, load_model, shipped_path
from .cost import CountingPipeline, FlopTable
from .features import ClassifierFeatures, frechet_distance, inception_score, perceptual_distance, prompt_alignment


@dataclass(frozen=True)
class Method:
    """One way of sampling: a stage plan, the draft it uses, how windows are verified and accepted."""

    label: str
    plan: StagePlan
    draft: str | None = None
    verify: str = "endpoints"
    accept: AcceptanceTest = field(default_factory=AcceptanceTest)

    @property
    def speculates(self) -> bool:
        return any(s.kind == "speculate" for s in self.plan.segments())

    @property
    def key(self) -> tuple:
        """What determines the images (the label does not; verify/accept only matter with windows)."""
        return (self.plan, self.draft if self.plan.uses_draft else None,
                self.verify if self.speculates else None, self.accept if self.speculates else None)


@dataclass
class MethodRun:
    """One method sampled over the evaluation set (quality) and timed at batch 1 (latency)."""

    method: Method
    images: torch.Tensor          # [n, 3, 32, 32] in [0, 1]
    calls: dict                   # {model: Counter(batch size -> calls)}
    target_calls: int
    target_evals: int
    draft_evals: int
    proposed: int
    accepted: int
    flops: dict                   # {model: FLOPs} over the whole set
    batched_s: float              # wall time of the batched sampling of the whole set

    @property
    def n(self) -> int:
        return self.images.shape[0]

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None

    @property
    def gflops_per_image(self) -> float:
        return sum(self.flops.values()) / self.n / 1e9


def balanced_prompts(n: int) -> list[str]:
    """Prompt ``i``: colour ``i % 8``, shape ``(i // 8 + i % 8) % 6`` — every 48 consecutive
    prompts cover all classes once, neighbours differ in colour, the first 6 also in shape."""
    c, s = len(COLOR_NAMES), len(SHAPES)
    return [prompt_of(i % c, (i // c + i % c) % s) for i in range(n)]


class Runner:
    def __init__(
        self,
        weights_dir: str | Path | None = None,
        *,
        images: int = 256,
        steps: int = 50,
        batch: int = 64,
        latency_images: int = 8,
        guidance: float = 3.0,
        seed: int = 10_000,
        progress: bool = True,
    ):
        if images < 2 or latency_images < 1 or latency_images > images:
            raise ValueError(f"need images >= 2 and 1 <= latency_images <= images, got {images}, {latency_images}")
        self.weights_dir = weights_dir
        self.pipe = CountingPipeline({n: load_model(shipped_path(n, weights_dir)) for n in MODEL_NAMES})
        self.classifier = load_model(shipped_path("classifier", weights_dir))
        self.features = ClassifierFeatures(self.classifier)
        self.flop_table = FlopTable(self.pipe.models)
        self.n, self.steps, self.batch, self.latency_n = images, steps, batch, latency_images
        self.guidance, self.progress = float(guidance), progress
        self.prompts = balanced_prompts(images)
        self.seeds = [seed + i for i in range(images)]
        labels = self.pipe.encode(self.prompts)
        self.classes = class_index(labels[:, 0], labels[:, 1])
        self._runs: dict[tuple, MethodRun] = {}
        self._feats: dict[tuple, object] = {}
        self._data_feats = None
        self._bar = None
        self._warm = False

    # ---- progress ------------------------------------------------------------------------
    def begin(self, desc: str, sample: list[Method], timed: list[Method]) -> None:
        """Open the progress bar of one experiment (images to sample + images to time)."""
        todo = {m.key for m in sample if m.key not in self._runs}
        total = len(todo) * self.n + len({m.key for m in timed}) * self.latency_n
        self._bar = tqdm(total=total, desc=desc, unit="img", disable=not self.progress, dynamic_ncols=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _tick(self, n: int, what: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(what, refresh=False)
            self._bar.update(n)

    # ---- sampling ------------------------------------------------------------------------
    def _call(self, m: Method, prompts, seeds):
        return self.pipe(prompts, plan=m.plan, draft=m.draft or "svd", verify=m.verify, accept=m.accept,
                         guidance=self.guidance, seed=list(seeds))

    def run(self, m: Method) -> MethodRun:
        """Sample the whole set with ``m`` in batches (once per run; later calls reuse it)."""
        if m.plan.num_steps > self.steps:
            raise ValueError(f"{m.label}: {m.plan.num_steps} steps, more than the evaluation's {self.steps}")
        if m.key in self._runs:
            return self._runs[m.key]
        self.pipe.reset_calls()
        imgs, tot = [], Counter()
        t0 = time.perf_counter()
        for i in range(0, self.n, self.batch):
            out = self._call(m, self.prompts[i : i + self.batch], self.seeds[i : i + self.batch])
            imgs.append(out.images)
            s = out.stats
            tot.update(target_calls=s.target_calls, target_evals=s.target_evals, draft_evals=s.draft_evals,
                       proposed=s.proposed_steps, accepted=s.accepted_steps)
            self._tick(out.images.shape[0], m.label)
        wall = time.perf_counter() - t0
        calls = self.pipe.reset_calls()
        run = MethodRun(m, torch.cat(imgs), calls, tot["target_calls"], tot["target_evals"], tot["draft_evals"],
                        tot["proposed"], tot["accepted"], self.flop_table.total(calls, self.guidance), wall)
        self._runs[m.key] = run
        return run

    def _warm_up(self) -> None:
        """First calls pay for allocations and thread-pool start-up: one forward of each model."""
        if self._warm:
            return
        with torch.inference_mode():
            for name in self.pipe.models:
                fn = self.pipe.denoiser(name, self.guidance)
                for b in (1, 2):
                    fn(torch.randn(b, 3, 32, 32), torch.rand(b), labels=torch.zeros(b, 2, dtype=torch.long))
        self.pipe.reset_calls()
        self._warm = True

    def latency(self, methods: list[Method]) -> dict[tuple, float]:
        """Mean seconds per image at batch 1 over the first ``latency_images`` pairs, methods
        interleaved image by image; ``{method key: seconds}``."""
        self._warm_up()
        uniq = list({m.key: m for m in methods}.values())
        total = {m.key: 0.0 for m in uniq}
        for i in range(self.latency_n):
            for m in uniq:
                t0 = time.perf_counter()
                self._call(m, [self.prompts[i]], [self.seeds[i]])
                total[m.key] += time.perf_counter() - t0
                self._tick(1, f"latency {m.label}")
        self.pipe.reset_calls()
        return {k: v / self.latency_n for k, v in total.items()}

    # ---- quality ---------------------------------------------------------------------------
    def feats(self, m: Method):
        if m.key not in self._feats:
            self._feats[m.key] = self.features(self.run(m).images)
        return self._feats[m.key]

    def data_feats(self):
        """Classifier features of real procedural images of the same prompts (not the same pixels)."""
        if self._data_feats is None:
            labels = self.pipe.encode(self.prompts)
            x, _, _ = make_batch(self.n, torch.Generator().manual_seed(12345), color=labels[:, 0], shape=labels[:, 1])
            self._data_feats = self.features((x + 1) / 2)
        return self._data_feats

    def quality(self, m: Method, ref: Method) -> dict:
        """Reference-free metrics of ``m`` and reference-based ones against ``ref`` (None for ``ref`` itself)."""
        run, f = self.run(m), self.feats(m)
        out = {
            "align": prompt_alignment(f.logits, self.classes),
            "is_tiny": inception_score(f.logits),
            "fd_data": frechet_distance(f.embedding, self.data_feats().embedding),
        }
        if m.key == ref.key:
            out.update(fd=None, lpips=None, psnr=None, ssim=None)
        else:
            r = self.run(ref)
            out.update(
                fd=frechet_distance(f.embedding, self.feats(ref).embedding),
                lpips=float(perceptual_distance(self.features, run.images, r.images).mean()),
                psnr=float(psnr(run.images, r.images).mean()),
                ssim=float(ssim(run.images, r.images).mean()),
            )
        return out

    def efficiency(self, m: Method, latency_s: float, ref_latency_s: float, ref: Method) -> dict:
        run, r = self.run(m), self.run(ref)
        return {
            "target_calls": run.target_calls / run.n,
            "target_evals": run.target_evals / run.n,
            "draft_evals": run.draft_evals / run.n,
            "acceptance": run.acceptance,
            "gflops": run.gflops_per_image,
            "flops_speedup": r.gflops_per_image / run.gflops_per_image,
            "latency_ms": latency_s * 1000,
            "speedup": ref_latency_s / latency_s,
            "batched_ms": run.batched_s / run.n * 1000,
            "batched_speedup": r.batched_s / run.batched_s,
        }
