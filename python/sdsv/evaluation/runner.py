"""Sampling a fixed evaluation set with one method, once, and measuring it.

An evaluation set is ``n`` (prompt, seed) pairs: prompt ``i`` cycles through all 48
(colour, shape) classes, seed ``i`` is ``seed0 + i``. Quality is measured on images sampled
in batches (an image does not depend on its batch mates: per-image noise generators,
per-sample windows in the sampler); latency is measured at batch 1 on the first few pairs
(median per image),
the latency-bound setting speculative sampling is for, with all methods of an experiment
interleaved image by image so that machine noise hits them alike. Each method is sampled
once per run and shared by the experiments that use it.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .methods import Method
from ..metrics import psnr, ssim
from ..tiny.data import COLOR_NAMES, SHAPES, class_index, make_batch, prompt_of
from ..tiny.weights import MODEL_NAMES, load_model, shipped_path
from .cost import CountingPipeline, FlopTable
from .features import ClassifierFeatures, frechet_distance, inception_score, perceptual_distance, prompt_alignment


@dataclass
class Batch:
    """One sampled batch of a method: its images and what it cost."""

    images: torch.Tensor
    counts: Counter               # target_calls, target_evals, draft_evals, proposed, accepted
    calls: dict                   # {model: Counter(batch size -> calls)}
    wall_s: float


@dataclass
class MethodRun:
    """One method sampled over the first ``n`` images of the evaluation set."""

    method: Method
    images: torch.Tensor          # [n, 3, 32, 32] in [0, 1]
    calls: dict                   # {model: Counter(batch size -> calls)}
    target_calls: int
    target_evals: int
    draft_evals: int
    proposed: int
    accepted: int
    flops: dict                   # {model: FLOPs} over the n images
    batched_s: float              # wall time of the batched sampling of the n images

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
        compile: bool = False,
        max_steps: int | None = None,
    ):
        if images < 2 or latency_images < 1 or latency_images > images:
            raise ValueError(f"need images >= 2 and 1 <= latency_images <= images, got {images}, {latency_images}")
        self.weights_dir = weights_dir
        self.pipe = CountingPipeline({n: load_model(shipped_path(n, weights_dir)) for n in MODEL_NAMES})
        # how the models run, for the result headers (TinyPipeline.compile says why compile)
        self.backend = self.pipe.compile_or_warn(guidance) if compile else "eager"
        self.pipe.reset_calls()  # compile's own forwards are not part of any method
        self.classifier = load_model(shipped_path("classifier", weights_dir))
        self.features = ClassifierFeatures(self.classifier)
        self.flop_table = FlopTable(self.pipe.models)
        self.n, self.steps, self.batch, self.latency_n = images, steps, batch, latency_images
        # a method with more steps than the evaluation's is a mistake in an experiment's list,
        # except for a converged reference (the tail experiment's, 4x the steps)
        self.max_steps = steps if max_steps is None else max_steps
        self.guidance, self.progress = float(guidance), progress
        self.prompts = balanced_prompts(images)
        self.seeds = [seed + i for i in range(images)]
        labels = self.pipe.encode(self.prompts)
        self.classes = class_index(labels[:, 0], labels[:, 1])
        self._runs: dict[tuple, list[Batch]] = {}
        self._feats: dict[tuple, object] = {}
        self._data_feats = None
        self._bar = None
        self._warm = False

    # ---- progress ------------------------------------------------------------------------
    def begin(self, desc: str, sample: list[Method], timed: list[Method], n: int | None = None) -> None:
        """Open the progress bar of one experiment (images to sample + images to time)."""
        n = self._check_n(n)
        todo = {m.key: max(0, n - sum(b.images.shape[0] for b in self._runs.get(m.key, []))) for m in sample}
        total = sum(todo.values()) + len({m.key for m in timed}) * self.latency_n
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
        return self.pipe(prompts, guidance=self.guidance, seed=list(seeds), **m.pipeline_kwargs())

    def _check_n(self, n: int | None) -> int:
        n = self.n if n is None else n
        if not 2 <= n <= self.n or (n != self.n and n % self.batch):
            raise ValueError(f"a subset must hold 2..{self.n} images and be a multiple of the batch {self.batch}, got {n}")
        return n

    def run(self, m: Method, n: int | None = None) -> MethodRun:
        """``m`` over the first ``n`` images (default all), sampled in batches; batches sampled
        earlier in the run are reused, missing ones are sampled now."""
        n = self._check_n(n)
        if m.policy.num_steps > self.max_steps:
            raise ValueError(f"{m.label}: {m.policy.num_steps} steps, more than this runner's {self.max_steps}")
        batches = self._runs.setdefault(m.key, [])
        done = sum(b.images.shape[0] for b in batches)
        for i in range(done, n, self.batch):
            self.pipe.reset_calls()
            t0 = time.perf_counter()
            out = self._call(m, self.prompts[i : i + self.batch], self.seeds[i : i + self.batch])
            wall = time.perf_counter() - t0
            s = out.stats
            counts = Counter(target_calls=s.target_calls, target_evals=s.target_evals, draft_evals=s.draft_evals,
                             proposed=s.proposed_steps, accepted=s.accepted_steps)
            batches.append(Batch(out.images, counts, self.pipe.reset_calls(), wall))
            self._tick(out.images.shape[0], m.label)
        used, total = [], 0
        for b in batches:
            if total >= n:
                break
            used.append(b)
            total += b.images.shape[0]
        counts, calls = Counter(), {}
        for b in used:
            counts.update(b.counts)
            for name, hist in b.calls.items():
                calls.setdefault(name, Counter()).update(hist)
        return MethodRun(m, torch.cat([b.images for b in used]), calls, counts["target_calls"], counts["target_evals"],
                         counts["draft_evals"], counts["proposed"], counts["accepted"],
                         self.flop_table.total(calls, self.guidance), sum(b.wall_s for b in used))

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
        """Median seconds per image at batch 1 over the first ``latency_images`` pairs, methods
        interleaved image by image; ``{method key: seconds}``. The median (not the mean) so that
        one image slowed down by another process does not move a method's number."""
        self._warm_up()
        uniq = list({m.key: m for m in methods}.values())
        times = {m.key: [] for m in uniq}
        for i in range(self.latency_n):
            for m in uniq:
                t0 = time.perf_counter()
                self._call(m, [self.prompts[i]], [self.seeds[i]])
                times[m.key].append(time.perf_counter() - t0)
                self._tick(1, f"latency {m.label}")
        self.pipe.reset_calls()
        return {k: statistics.median(v) for k, v in times.items()}

    # ---- quality ---------------------------------------------------------------------------
    def feats(self, m: Method, n: int | None = None):
        n = self._check_n(n)
        if (m.key, n) not in self._feats:
            self._feats[(m.key, n)] = self.features(self.run(m, n).images)
        return self._feats[(m.key, n)]

    def data_feats(self, n: int | None = None):
        """Classifier features of real procedural images of the same prompts (not the same pixels)."""
        n = self._check_n(n)
        if self._data_feats is None:
            labels = self.pipe.encode(self.prompts)
            x, _, _ = make_batch(self.n, torch.Generator().manual_seed(12345), color=labels[:, 0], shape=labels[:, 1])
            self._data_feats = self.features((x + 1) / 2)
        f = self._data_feats
        return type(f)(f.embedding[:n], f.logits[:n])

    def quality(self, m: Method, ref: Method, n: int | None = None) -> dict:
        """Reference-free metrics of ``m`` and reference-based ones against ``ref`` (None for ``ref``
        itself), over the first ``n`` images."""
        n = self._check_n(n)
        run, f = self.run(m, n), self.feats(m, n)
        out = {
            "align": prompt_alignment(f.logits, self.classes[:n]),
            "is_tiny": inception_score(f.logits),
            "fd_data": frechet_distance(f.embedding, self.data_feats(n).embedding),
        }
        if m.key == ref.key:
            out.update(fd=None, lpips=None, psnr=None, psnr_min=None, ssim=None)
        else:
            r = self.run(ref, n)
            p = psnr(run.images, r.images)
            out.update(
                fd=frechet_distance(f.embedding, self.feats(ref, n).embedding),
                lpips=float(perceptual_distance(self.features, run.images, r.images).mean()),
                psnr=float(p.mean()),
                psnr_min=float(p.min()),  # the worst image: a mean hides one broken prompt
                ssim=float(ssim(run.images, r.images).mean()),
            )
        return out

    def efficiency(self, m: Method, latency_s: float, ref_latency_s: float, ref: Method, n: int | None = None) -> dict:
        run, r = self.run(m, n), self.run(ref, n)
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
