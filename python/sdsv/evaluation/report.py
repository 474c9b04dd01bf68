"""Markdown tables, provenance headers and figures of the evaluation."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch


def _fmt(value, spec) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if callable(spec):
        return spec(value)
    return format(value, spec)


def md_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str | Callable]]) -> str:
    """``columns``: (row key, header, format spec or function); None/NaN print as an em dash."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def provenance(weights_dir: str | Path | None, backend: str = "eager") -> dict:
    from ..tiny.weights import MODEL_NAMES, shipped_path

    try:
        import matplotlib
        mpl = matplotlib.__version__
    except ImportError:
        mpl = "not installed"
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {platform.platform()}",
        "threads": torch.get_num_threads(),
        "models": backend,
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, matplotlib {mpl}",
        "sdsv_commit": _git_commit(),
        "weights": {n: _sha(shipped_path(n, weights_dir)) for n in MODEL_NAMES + ("classifier",)},
    }


def machine() -> str:
    """The processor, its cores, torch's version and threads, Python's: one line for result headers."""
    return (f"{platform.processor() or platform.machine()} x{os.cpu_count()} cpus, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, python {platform.python_version()}")


def header(title: str, setup: str, prov: dict) -> str:
    w = ", ".join(f"{k} {v}" for k, v in prov["weights"].items())
    return (f"## {title}\n\n{setup}\n\n"
            f"machine: {prov['machine']}; torch threads {prov['threads']}; models {prov.get('models', 'eager')}  \n"
            f"versions: {prov['versions']}; sdsv {prov['sdsv_commit']}  \n"
            f"weights (sha256): {w}; run {prov['date_utc']}\n")


# ---- figures -------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("sdsv eval draws its figures with matplotlib: pip install matplotlib "
                          "(or the extra: pip install 'sdsv[eval]')") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_strip(images: dict[str, torch.Tensor], captions: Sequence[str], path: Path, title: str) -> Path:
    """Rows = methods (``{label: [k, 3, h, w]}``), columns = prompts, like the paper's Figure 2."""
    plt = _pyplot()
    rows, cols = len(images), len(captions)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.6, 1.3 * rows + 0.5), squeeze=False)
    for r, (label, imgs) in enumerate(images.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(imgs[c].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(captions[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_plot(series: dict[str, list[dict]], points: dict[str, dict], lines: dict[str, list[dict]], path: Path,
                title: str, x: str = "speedup", xlabel: str = "speedup over target-only (latency, batch 1)") -> Path:
    """Two panels against speedup: PSNR (filled markers: the mean over the images; hollow, joined
    by a dotted line: the worst image) and FD-tiny. ``series``: sweeps (coloured lines, sorted by
    x); ``points``: single baselines; ``lines``: the target alone with fewer steps, one dashed
    line per solver with the step counts written next to its points."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    styles = {**{name: dict(marker="o", ls="-") for name in series},
              **{name: dict(marker="s", ls="--", color=c) for name, c in zip(lines, ("black", "dimgray", "silver"))}}
    for ax, (key, ylabel) in zip(axes, (("psnr", "PSNR vs target-only, dB (filled: mean, hollow: worst image)"),
                                        ("fd", "FD-tiny vs target-only (lower is better)"))):
        for name, rows in {**series, **lines}.items():
            rows = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[x])
            if not rows:
                continue
            xs = [r[x] for r in rows]
            (line,) = ax.plot(xs, [r[key] for r in rows], ms=4, lw=1.2, label=name, **styles[name])
            if key == "psnr":
                ax.plot(xs, [r["psnr_min"] for r in rows], marker=styles[name]["marker"], ls=":", ms=4, lw=0.8,
                        color=line.get_color(), mfc="white")
            if name in lines:
                for r in rows:
                    ax.annotate(f"{r['steps']}", (r[x], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        markers = iter("^vD*Pxh")
        for name, r in points.items():
            if r.get(key) is not None:
                (pt,) = ax.plot([r[x]], [r[key]], next(markers), ms=8, ls="none", label=name)
                if key == "psnr":
                    ax.plot([r[x]], [r["psnr_min"]], pt.get_marker(), ms=8, ls="none", color=pt.get_color(), mfc="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    legend = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


TAIL_SERIES = {  # (family, solver) -> legend name; the target alone is drawn as one dashed line per solver
    ("target", "euler"): "target alone, Euler", ("target", "dpm++2m"): "target alone, DPM-Solver++(2M)",
    ("target", "unipc"): "target alone, UniPC", ("cache", "euler"): "cache (self), Euler",
    ("cache", "dpm++2m"): "cache (self), DPM-Solver++(2M)", ("error-controlled", "euler"): "error-ctrl (self), Euler",
    ("error-controlled", "dpm++2m"): "error-ctrl (self), DPM-Solver++(2M)", ("SDSV", "euler"): "SDSV (self), Euler",
}


def tail_plot(rows: Sequence[dict], path: Path, title: str, x: str = "speedup") -> Path:
    """Two panels, fidelity and accuracy: speedup against the 5th-percentile PSNR (filled) and the
    mean (small hollow marker, joined to it), one colour per (family, solver); the target alone
    with fewer steps as dashed lines labelled with their step counts."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(TAIL_SERIES.get((r["family"], r["solver"]), f"{r['family']}, {r['solver']}"), []).append(r)
    colors = dict(zip(groups, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for ax, (y, name) in zip(axes, (("fid", "fidelity: PSNR vs the target's own output, dB"),
                                    ("acc", "accuracy: PSNR vs the converged reference, dB"))):
        for label, members in groups.items():
            pts = sorted((r for r in members if r.get(f"{y}_p5") is not None), key=lambda r: r[x])
            if not pts:
                continue
            xs, c = [r[x] for r in pts], colors[label]
            baseline = pts[0]["family"] == "target"
            ax.plot(xs, [r[f"{y}_p5"] for r in pts], marker="s" if baseline else "o", ls="--" if baseline else "none",
                    color=c, ms=6, label=label)
            for r in pts:
                ax.plot([r[x], r[x]], [r[f"{y}_p5"], r[f"{y}_mean"]], color=c, lw=0.6, alpha=0.5)
                ax.plot([r[x]], [r[f"{y}_mean"]], marker="o", ms=3, color=c, mfc="white")
                text = str(r["steps"]) if baseline else r["method"].replace(" (self)", "").replace("(self, ", "(")
                ax.annotate(text, (r[x], r[f"{y}_p5"]), textcoords="offset points", xytext=(4, -9), fontsize=6)
        ax.set_title(f"{name}\nfilled: 5th percentile, hollow: mean", fontsize=9)
        ax.set_xlabel("speedup over the target alone (latency, batch 1)" if x == "speedup" else x)
        ax.set_ylabel("PSNR, dB")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
