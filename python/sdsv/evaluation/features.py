"""Image-quality metrics in the feature space of the shipped tiny classifier.

The usual metrics need networks that cannot be downloaded here (Inception for FID and IS,
CLIP for prompt alignment, AlexNet/VGG for LPIPS). Their analogues below use the small CNN
that is trained on the procedural data and ships with the package
(:class:`sdsv.tiny.classifier.ShapeClassifier`). They are named for what they are —
``FD-tiny``, ``IS-tiny``, ``LPIPS-tiny`` — and their values are not comparable with the
paper's FID/IS/LPIPS, only with each other (same classifier, same number of images).

Images are ``[b, 3, h, w]`` in ``[0, 1]`` everywhere (the classifier itself sees ``[-1, 1]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Features:
    """What the classifier sees in a batch of images."""

    embedding: torch.Tensor  # [b, 128] penultimate features (FD-tiny)
    logits: torch.Tensor     # [b, classes] (IS-tiny, alignment)


class ClassifierFeatures:
    """Runs the classifier in chunks and exposes the pieces each metric needs."""

    def __init__(self, classifier: nn.Module, chunk: int = 256):
        self.clf = classifier.eval().requires_grad_(False)
        self.chunk = int(chunk)

    @torch.inference_mode()
    def __call__(self, images01: torch.Tensor) -> Features:
        embs, logits = [], []
        for part in images01.split(self.chunk):
            e = self.clf.embedding(part.float() * 2 - 1)
            embs.append(e)
            logits.append(self.clf.head(e))
        return Features(torch.cat(embs).double(), torch.cat(logits).double())

    @torch.inference_mode()
    def conv_maps(self, images01: torch.Tensor) -> list[torch.Tensor]:
        """Activation maps after every nonlinearity of the conv trunk (32x32, 32x32, 16x16, 8x8)."""
        maps, h = [], images01.float() * 2 - 1
        for layer in self.clf.features:
            h = layer(h)
            if isinstance(layer, nn.SiLU):
                maps.append(h)
        return maps


# ---- FD-tiny ---------------------------------------------------------------------------------
def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)``: the Fréchet (2-Wasserstein)
    distance of two Gaussians, computed with symmetric eigendecompositions in float64 (no complex
    round-off from a general matrix square root)."""
    mu1, mu2, cov1, cov2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, cov1, cov2))
    r1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh((r1 @ cov2 @ r1 + (r1 @ cov2 @ r1).T) / 2).clamp_min(0).sqrt().sum()
    d = float((mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)
    return max(d, 0.0)


def gaussian_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = feats.double()
    if f.dim() != 2 or f.shape[0] < 2:
        raise ValueError(f"need [n >= 2, d] features for a covariance, got {tuple(f.shape)}")
    return f.mean(0), torch.cov(f.T)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """FD-tiny of two feature sets ``[n, d]`` (the FID formula in the classifier's embedding).

    Like FID it is biased upwards for small ``n``: compare values at equal ``n`` only."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# ---- IS-tiny -------------------------------------------------------------------------------
def inception_score(logits: torch.Tensor) -> float:
    """IS-tiny: ``exp(E_x KL(p(y|x) || p(y)))`` over the classifier's classes (one split).

    1 when every image gets the same prediction, at most the number of classes (confident
    predictions spread evenly over all classes)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    log_marginal = torch.log(p.mean(0).clamp_min(1e-300))
    kl = (p * (logp - log_marginal)).sum(1)
    return float(kl.mean().exp())


# ---- prompt alignment --------------------------------------------------------------------
def prompt_alignment(logits: torch.Tensor, classes: torch.Tensor) -> float:
    """Fraction of images the classifier assigns to the (colour, shape) class of their prompt
    (the CLIP-score analogue: the tiny prompts name exactly one class)."""
    if logits.shape[0] != classes.shape[0]:
        raise ValueError(f"{logits.shape[0]} images but {classes.shape[0]} prompt classes")
    return float((logits.argmax(1) == classes.to(logits.device)).double().mean())


# ---- LPIPS-tiny ----------------------------------------------------------------------------
def perceptual_distance(feats: ClassifierFeatures, a: torch.Tensor, b: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """LPIPS-tiny, per image ``[n]``: LPIPS' recipe on the classifier's conv activations —
    unit-normalise each spatial position's channel vector, squared distance, spatial mean —
    averaged over the four activation maps with equal weights (LPIPS learns per-channel weights
    from human judgements; none exist here). 0 for identical images, at most 4."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two [n, c, h, w] image batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    out = []
    for pa, pb in zip(a.split(chunk), b.split(chunk)):
        ma, mb = feats.conv_maps(pa), feats.conv_maps(pb)
        per_layer = [(F.normalize(x, dim=1, eps=1e-10) - F.normalize(y, dim=1, eps=1e-10)).pow(2).sum(1).mean((1, 2))
                     for x, y in zip(ma, mb)]
        out.append(torch.stack(per_layer).mean(0))
    return torch.cat(out).double()
