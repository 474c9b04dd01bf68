"""Markdown summary of one device run's results (the files ``run_device.sh`` leaves in $OUT).

    python benchmarks/gpu/summarize.py benchmarks/results/gpu-h200-2026-11-30 > .../summary.md

Two tables: the model-size costs from ``scale_check.json`` (target at batch 1/2/10, trained-draft
configuration, the self-draft's cheap part, sampler overhead) and, from the kernel benchmark's
JSON, each op's time per provider at every size, with the fastest marked.
"""

from __future__ import annotations

import glob
import json
import os
import sys


def _self(forward: dict, head: int) -> str:
    """The self-draft row of either layout: a draft call (``head_blocks`` 0 / 1) or, in the
    2026-11-30 run, the target with its blocks skipped (0) or with its first and last block kept (1)."""
    row = forward.get(f"self_draft_head{head}_b1") or forward.get(f"self_draft_keep{head}_b1")
    return f"{row['ratio_to_target_b1']:.3f}" if row else "-"


def scale_table(path: str) -> list[str]:
    d = json.load(open(path))
    env = d["env"]
    lines = [f"### Model-size costs ({env['device']}, torch {env['torch']}, diffusers {env['diffusers']}, {env['dtype']})",
             "", "| model | shape | params | target b1 | b2 / b1 | b10 / b1 | trained-draft config / target | "
             "self-draft call / target | with a block computed / target | sampler per step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("flux", "wan"):
        if name not in d:
            continue
        m, f = d[name], d[name]["forward"]
        b1 = f["target_b1"]["median_s"]
        spec = [v for k, v in m.get("sample", {}).items() if k != "target_only"]
        per_step = spec[0]["sampler_s_per_step"] if spec else float("nan")
        lines.append(
            f"| {name} | {m['shape']} | {m['params'] / 1e9:.2f}B | {b1 * 1e3:.0f} ms | {f['target_b2']['ratio_to_b1']:.2f} | "
            f"{f['target_b10']['ratio_to_b1']:.2f} | {f['draft_b1']['ratio_to_target_b1']:.3f} | "
            f"{_self(f, 0)} | {_self(f, 1)} | "
            f"{per_step * 1e3:.2f} ms ({per_step / b1:.2%}) |")
    return lines


def kernel_table(path: str) -> list[str]:
    d = json.load(open(path))
    env, rows = d["environment"], d["results"]
    providers = env["providers"]
    copy = f"{env['copy_GBps']:.0f} GB/s" if env.get("copy_GBps") else "not measured"
    peak = f"{env['peak_GBps_datasheet']:.0f} GB/s" if env.get("peak_GBps_datasheet") else "unknown"
    checked = [r["matches_reference"] for r in rows if r.get("matches_reference") is not None]
    correct = (f"All results matched the reference: {all(checked)}." if checked else
               "Correctness on the device: the kernel tests of the same run.")
    lines = [f"### Kernels ({env.get('gpu') or 'CPU smoke'}, torch {env['torch']}, triton {env['triton']}; "
             f"device-to-device copy {copy}, datasheet {peak})", "",
             "Median ms per call (GB/s of compulsory traffic); **bold** = fastest; `compile` = torch.compile of the "
             f"reference. {correct}", "",
             "| size | R | dtype | op | " + " | ".join(providers) + " |", "|---|---|---|---|" + "---|" * len(providers)]
    keys = []
    for r in rows:
        k = (r["size"], r["R"], r["dtype"], r["op"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        cells = {r["provider"]: r for r in rows if (r["size"], r["R"], r["dtype"], r["op"]) == k}
        best = min((c["ms"] for c in cells.values() if c["ms"] == c["ms"]), default=None)
        out = []
        for p in providers:
            c = cells.get(p)
            if c is None:
                out.append("")
                continue
            txt = f"{c['ms']:.3f} ({c['GBps']:.0f})"
            out.append(f"**{txt}**" if c["ms"] == best else txt)
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(out) + " |")
    return lines


def main(folder: str) -> None:
    parts = []
    if os.path.exists(os.path.join(folder, "scale_check.json")):
        parts += scale_table(os.path.join(folder, "scale_check.json")) + [""]
    for path in sorted(p for p in glob.glob(os.path.join(folder, "gpu-*.json")) if not p.endswith("-suite.json")):
        parts += kernel_table(path) + [""]
    print("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
