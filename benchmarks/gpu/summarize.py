"""Markdown summary of one device run's results (the files ``run_device.sh`` leaves in $OUT).

    python benchmarks/gpu/summarize.py benchmarks/results/gpu-h200-2026-11-30 > .../summary.md

Tables for whatever the folder holds: from ``e2e_check.json`` the end-to-end speed-ups per size and
policy, the batch-cost curve with its per-row discount, the VAE decodes and the compile check; from
``op_bandwidth.json`` each fused op against a copy of the same bytes; from ``scale_check.json`` the
model-size costs (target at batch 1/2/10, trained-draft configuration, the self-draft's cheap part,
sampler overhead); from the kernel benchmark's JSON each op's time per provider at every size, with
the fastest marked and its fraction of the measured copy bandwidth.
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
             "| size | R | dtype | op | " + " | ".join(providers) + " | fastest: % of copy |",
             "|---|---|---|---|" + "---|" * len(providers) + "---|"]
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
        fastest = next((c for c in cells.values() if c["ms"] == best), None)
        frac = fastest.get("frac_copy") if fastest else None
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(out) +
                     (f" | {frac:.0%} |" if frac is not None else " | - |"))
    return lines


def _f(x, fmt="{:.3f}", none="-"):
    if x is None or isinstance(x, str):
        return none if x is None else x
    return fmt.format(x)


def e2e_tables(path: str) -> list[str]:
    """``e2e_check.json``: end-to-end runs, the R-curves, VAE decodes and the compile check."""
    d = json.load(open(path))
    env, secs = d["env"], d["sections"]
    what = ("CPU dry run, tiny random configs: checks the script, measures nothing at scale" if env.get("tiny")
            else "random bf16 weights at the published configurations: timings, not image quality")
    lines = [f"### End to end: `pipe(...)` with and without `sdsv.enable(pipe)` ({env['device']}, torch {env['torch']}, "
             f"diffusers {env['diffusers']}, {env['dtype']}; {what})", "",
             "Wall-clock of `pipe(prompt_embeds=..., output_type=\"latent\")` (preamble + denoising + SDSV; no text "
             "encoding, no VAE decode), median of `reps` calls after a warm-up. `+ decode` adds one VAE decode "
             "(`decode/`) to both sides. Target calls (rows): model forward calls (states evaluated; with CFG each "
             "state is 2 model rows of one call for SDSV, 2 calls for the pipeline alone). rel-L2: final latent "
             "against the pipeline alone's.", "",
             "| run | variant | policy | wall s | speed-up | + decode | target calls (rows) | draft calls | acceptance "
             "| rel-L2 vs plain | peak GB | reps |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    decode = {v.get("size"): v.get("decode_s") for k, v in secs.items() if k.startswith("decode/")}
    for name, sec in secs.items():
        if not name.startswith("e2e/"):
            continue
        if sec.get("status") in ("skipped", "error") and not sec.get("variants"):
            lines.append(f"| {name[4:]} | {sec.get('status')}: {sec.get('why') or sec.get('error', '')[:80]} |"
                         + " |" * 10)
            continue
        plain = sec.get("variants", {}).get("plain", {}).get("wall_s")
        dec = decode.get(sec.get("size"))
        for var, v in sec.get("variants", {}).items():
            if "wall_s" not in v:
                why = v.get("skipped") or v.get("error", "")
                lines.append(f"| {name[4:]} | {var} | {why[:90]} |" + " |" * 9)
                continue
            with_dec = (plain + dec) / (v["wall_s"] + dec) if plain and dec else None
            acc = v.get("acceptance")
            acc = f"{acc:.0%}" if isinstance(acc, float) and acc == acc else "-"
            lines.append(
                f"| {name[4:]} | {var} | {v.get('policy', '')} | {v['wall_s']:.3f} | {_f(v.get('speedup'), '{:.2f}x')} | "
                f"{_f(with_dec, '{:.2f}x')} | {v['target_calls']} ({v['target_rows']}) | {v.get('draft_calls', 0)} | {acc} | "
                f"{_f(v.get('rel_l2_vs_plain'), '{:.2g}')} | {_f(v.get('peak_gb'), '{:.1f}')} | {v.get('reps')} |")
    rc = [(k, v) for k, v in secs.items() if k.startswith("rcurve/")]
    if rc:
        Rs = sorted({r["R"] for _, v in rc for r in v.get("rows", []) if "median_s" in r})
        lines += ["", "### Batch cost: R rows in one call against R single calls, `t(R) / (R t(1))`", "",
                  "Below 1: a verification batch of R rows costs less than R target steps (the discount batched "
                  "verification needs); 1.00: the rows cost what they compute.", "",
                  "| size | image tokens (+ text) | t(1) ms | " + " | ".join(f"R={r}" for r in Rs) + " |",
                  "|---|---|---|" + "---|" * len(Rs)]
        for name, v in rc:
            by_r = {r["R"]: r for r in v.get("rows", [])}
            t1 = by_r.get(1, {}).get("median_s")
            cells = [_f(by_r.get(r, {}).get("ratio_to_R_singles"), "{:.2f}") for r in Rs]
            lines.append(f"| {name[7:]} | {v.get('image_tokens')} (+{v.get('text_tokens')}) | {_f(t1 and t1 * 1e3, '{:.1f}')} | "
                         + " | ".join(cells) + " |")
    dec_rows = [(k, v) for k, v in secs.items() if k.startswith("decode/")]
    if dec_rows:
        lines += ["", "### VAE decode (one call, random weights at the published VAE configurations)", "",
                  "| size | latent | dtype | decode s | first call s |", "|---|---|---|---|---|"]
        for name, v in dec_rows:
            lines.append(f"| {name[7:]} | {v.get('latent_shape')} | {v.get('dtype')} | {_f(v.get('decode_s'))} | "
                         f"{_f(v.get('first_s'))} |" + (f" {v['error'][:80]}" if v.get("error") else ""))
    for name, v in secs.items():
        if not name.startswith("compile/"):
            continue
        lines += ["", f"### torch.compile with the self-draft's hooks ({name[8:]}, {v.get('steps')} steps, torch "
                      f"{v.get('torch')})", "",
                  "`explain`: `torch._dynamo.explain` of one call each on the model's width cut to one block per stack.", "",
                  "| call | graphs | graph breaks | break reasons |", "|---|---|---|---|"]
        for call, e in v.get("explain", {}).items():
            reasons = "; ".join(f"{r['reason'][:80]} @ {(r['user_stack'] or ['?'])[-1]}" for r in e.get("break_reasons", []))
            lines.append(f"| {call} | {e.get('graph_count', '-')} | {e.get('graph_break_count', e.get('error', '-'))} | "
                         f"{reasons or '-'} |")
        lines += ["", "Compile modes: `regional` = `transformer.compile_repeated_blocks(fullgraph=True)`, `whole` = "
                      "`transformer.compile()`, `whole_guarded` = the same with `torch._dynamo.config."
                      "skip_nnmodule_hook_guards = False`, `wrapped` = `pipe.transformer = torch.compile(transformer)`. "
                      "Graphs compiled per call: first / second (short warm-up calls) / timed.", "",
                  "| mode / variant | first call s | timed s | vs eager | rel-L2 vs eager | graphs compiled | graph breaks | "
                  "result |", "|---|---|---|---|---|---|---|---|"]
        for label, r in v.get("runs", {}).items():
            dyn = r.get("dynamo", {})
            graphs = " / ".join(str(dyn.get(c, {}).get("stats", {}).get("unique_graphs", 0))
                                for c in ("first_call", "second_call", "timed_call"))
            breaks = sum(sum(dyn.get(c, {}).get("graph_break", {}).values()) for c in dyn)
            res = r.get("skipped") or r.get("error") or "ok"
            lines.append(f"| {label} | {_f(r.get('first_call_s'), '{:.1f}')} | {_f(r.get('wall_s'))} | "
                         f"{_f(r.get('speedup_vs_eager'), '{:.2f}x')} | {_f(r.get('rel_l2_vs_eager'), '{:.2g}')} | "
                         f"{graphs if dyn else '-'} | {breaks if dyn else '-'} | {res[:100]} |")
    return lines


def bandwidth_table(path: str) -> list[str]:
    """``op_bandwidth.json``: each op's GB/s against a copy of the same bytes and the DRAM copy."""
    d = json.load(open(path))
    env = d["env"]
    lines = [f"### Fused ops against the copy bandwidth ({env['device']}, torch {env['torch']}, {env['dtype']}; "
             f"1 GiB device copy {env['copy_dram_GBps']:.0f} GB/s measured in the same run)", "",
             "`% copy`: the op's time against a device-to-device copy moving the same bytes (read + written), "
             "timed the same way; `% DRAM`: GB/s against the 1 GiB copy. `device / host us`: torch.profiler's kernel "
             "time per call against the call's host time (device well under host: bound by launches, not memory).",
             "", "| rows | R | op | backend | MB | us | GB/s | % copy | % DRAM | >= 85% | kernels | device / host us |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in d["cases"]:
        if "us" not in c:
            lines.append(f"| {c.get('rows')} | {c.get('R')} | {c.get('op')} | {c.get('backend', '')} | "
                         f"{c.get('error', '')[:80]} |" + " |" * 7)
            continue
        p = c.get("profile", {})
        names = ", ".join(k["name"][:40] for k in p.get("kernels", [])[:2]) or "-"
        ok = "yes" if c["frac_copy_same_bytes"] >= 0.85 else "no"
        lines.append(f"| {c['rows']} | {c['R']} | {c['op']} | {c['backend']} | {c['MB']:.1f} | {c['us']:.1f} | "
                     f"{c['GBps']:.0f} | {c['frac_copy_same_bytes']:.0%} | {c['frac_copy_dram']:.0%} | {ok} | {names} | "
                     + (f"{p['device_us_per_call']:.1f} / {p['host_us_per_call']:.1f} |" if p else "- |"))
    return lines


def main(folder: str) -> None:
    parts = []
    if os.path.exists(os.path.join(folder, "e2e_check.json")):
        parts += e2e_tables(os.path.join(folder, "e2e_check.json")) + [""]
    if os.path.exists(os.path.join(folder, "op_bandwidth.json")):
        parts += bandwidth_table(os.path.join(folder, "op_bandwidth.json")) + [""]
    if os.path.exists(os.path.join(folder, "scale_check.json")):
        parts += scale_table(os.path.join(folder, "scale_check.json")) + [""]
    for path in sorted(p for p in glob.glob(os.path.join(folder, "gpu-*.json")) if not p.endswith("-suite.json")):
        parts += kernel_table(path) + [""]
    print("\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
