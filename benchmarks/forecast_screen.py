"""How much each kind of forecast misses the self-draft's deep residual, measured off-line on the
tiny target's own trajectories (docs/tail.md, "Forecasts"; issue: forecasts that miss less).

``record``: the calibration set's first ``--images`` images (seeds 21056.., the tail study's), 50
Euler steps with guidance, keeping at every step the hidden state entering the deep blocks ``h``
and the deep residual ``R`` of both guidance branches. ``screen``: for anchors at uniform spacing
``k`` (2, 3, 4 steps: the windows' lengths) on that trajectory, each candidate forecasts ``R`` at
the next ``k`` steps from the anchors (and, for the input-aware ones, from the true ``h`` there);
the relative squared error ``|R^ - R|^2 / |R|^2`` per image (branches averaged), in dB, by zone
of the forecast step, and against the line (today's forecast). Candidates whose weights are fitted
(least squares) are fitted on the first half of the images and every candidate is scored on the
second half. ``fit``: the Newton-form weights ``p0 + slope (p1 - p0) + curvature (p2 - p1)``
fitted globally and per zone, scored the same way. ``grain``: the forecast at diffusers'
TaylorSeer's grain — each block's attention and MLP outputs before their gates, forecast apart and
summed with the gates of the new sigma (exact: the gates are cheap) — against the same forecast of
the whole residual, on the scored half (sampled again with the blocks' outputs kept; no cache).

    python benchmarks/forecast_screen.py record --images 96      # ~2 min, ~1 GB in the cache
    python benchmarks/forecast_screen.py screen                  # ~10 min on one thread
    python benchmarks/forecast_screen.py fit                     # ~1 min
    python benchmarks/forecast_screen.py grain                   # ~3 min, ~2 GB of memory

The screen only ranks forecasts; the windows decide (tail_study.py --sections forecasts).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch

from sdsv.forecast import lagrange_coefficients

OUT = Path("benchmarks/results/forecast_screen")
START, STEPS = 21_056, 50


def record(images: int, cache: Path) -> None:
    from sdsv import StagePlan
    from sdsv.evaluation.runner import balanced_prompts
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    rec, cur = [], {}
    blocks = pipe.target.blocks  # the tiny split forecasts all of them (head_blocks = tail_blocks = 0)
    blocks[0].register_forward_pre_hook(lambda m, a: cur.__setitem__("h", a[0].clone()))
    blocks[-1].register_forward_hook(lambda m, a, o: rec.append((cur["h"].half(), (o - cur["h"]).half())))
    prompts = balanced_prompts(START - 20_000 + images)[START - 20_000:]
    out = pipe(prompts, policy=StagePlan.target_only(STEPS), solver="euler", seed=[START + i for i in range(images)])
    torch.save({"h": torch.stack([r[0] for r in rec]), "R": torch.stack([r[1] for r in rec]), "images": out.images},
               cache / f"trajectories_{images}.pt")


def poly(A, sig, at, order):
    use = list(range(len(A)))[-(order + 1):]
    c = lagrange_coefficients([sig[i] for i in use], at)
    return sum(ci * A[i] for ci, i in zip(c, use))

def hermite2(A, sig, at, sd=0.5):
    # Newton form around the newest anchor in units of the anchor spacing; quadratic term's x(x+1)
    # replaced by the Hermite-damped x(x+1) - 2 sd^2 (HiCache-style contraction)
    a, b, c = A[-1], A[-2], A[-3]
    hstep = sig[-1] - sig[-2]
    x = (at - sig[-1]) / hstep
    d1 = a - b; d2 = a - 2 * b + c
    return a + x * d1 + 0.5 * (x * (x + 1) - 2 * sd * sd) * d2 if x * (x + 1) > 2 * sd * sd else a + x * d1

def dmd(A, sig, at):
    k = (at - sig[-1]) / (sig[-1] - sig[-2])
    V = torch.stack([a.flatten(1) for a in A], -1).double()  # [rows, d, m]
    X, Xp = V[..., :-1], V[..., 1:]
    U, Sv, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = (Sv > Sv[:, :1] * 1e-4)
    Sinv = torch.where(keep, 1.0 / Sv.clamp_min(1e-30), torch.zeros_like(Sv))
    Atil = (U.mT @ Xp @ Vh.mT) * Sinv[:, None, :]
    ev, W = torch.linalg.eig(Atil)
    Phi = ((Xp @ Vh.mT) * Sinv[:, None, :]).cdouble() @ W
    # gelsd: the default driver (gelsy) returns zeros when a dropped mode leaves Phi a zero column
    b = torch.linalg.lstsq(Phi, V[..., -1:].cdouble(), driver="gelsd").solution
    pred = (Phi @ (ev.pow(k)[..., None] * b)).real.squeeze(-1)
    bad = ~torch.isfinite(pred).all(1)
    pred[bad] = V[bad, :, -1]
    return pred.reshape(A[-1].shape).float()

def foca(A, sig, at_list, prev_last):
    """cache-dit's FoCa recursion with its derivatives per unit sigma: each forecast is the newest
    anchor plus the elapsed sigma times the mean of the anchor slope and the latest local slope
    (first the newest anchor against the previous window's last forecast ``prev_last``, then
    between consecutive forecasts), damped toward the anchor beyond 3 steps as cache-dit does.
    Returns the forecasts at every sigma of ``at_list`` (the window's steps, in order)."""
    slope_full = (A[-1] - A[-2]) / (sig[-1] - sig[-2])
    prev_value, prev_sigma = prev_last
    slope_curr = (A[-1] - prev_value) / (sig[-1] - prev_sigma)
    last_value, last_sigma, out = A[-1], sig[-1], []
    for j, at in enumerate(at_list, start=1):
        pred = A[-1] + (at - sig[-1]) * 0.5 * (slope_full + slope_curr)
        if j > 3:
            w = 3.0 / j
            pred = w * (A[-1] + (at_list[2] - sig[-1]) * 0.5 * (slope_full + slope_curr)) + (1 - w) * A[-1]
        slope_curr = (pred - last_value) / (at - last_sigma)
        last_value, last_sigma = pred, at
        out.append(pred)
    return out


def freq_split(A, sig, at, cutoff, low_kind, high_kind):
    def parts(t):
        img = t[:, 2:].reshape(t.shape[0], 8, 8, -1)
        F = torch.fft.fft2(img, dim=(1, 2))
        f = torch.fft.fftfreq(8) * 8
        mask = ((f[:, None].abs() <= cutoff) & (f[None, :].abs() <= cutoff)).to(F.dtype)[None, :, :, None]
        low = torch.fft.ifft2(F * mask, dim=(1, 2)).real.reshape(t.shape[0], 64, -1)
        return low, t[:, 2:] - low
    fl = {"reuse": lambda: A[-1], "line": lambda: poly(A, sig, at, 1), "quad": lambda: poly(A, sig, at, 2)}
    lo_src, hi_src = fl[low_kind](), fl[high_kind]()
    lo, _ = parts(lo_src); _, hi = parts(hi_src)
    words = poly(A, sig, at, 1)[:, :2]
    return torch.cat([words, lo + hi], 1)

def jac_channel(A, Hs, sig, at, h, base):
    dR = A[-1] - A[-2]; dH = Hs[-1] - Hs[-2]
    J = (dR * dH).sum(1, keepdim=True) / (dH.square().sum(1, keepdim=True) + 1e-12)
    if base == "reuse":
        return A[-1] + J * (h - Hs[-1])
    return poly(A, sig, at, 1) + J * (h - poly(Hs, sig, at, 1))

def jac_dense(A, Hs, sig, at, h, lam):
    dR = torch.cat([A[-1] - A[i] for i in range(len(A) - 1)], 1)   # [rows, (m-1)*66, 192]
    dH = torch.cat([Hs[-1] - Hs[i] for i in range(len(A) - 1)], 1)
    Gm = dH.mT @ dH
    eye = torch.eye(Gm.shape[-1])
    M = torch.linalg.solve(Gm + lam * Gm.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] * eye, dH.mT @ dR)
    return A[-1] + (h - Hs[-1]) @ M

def rel_err(pred, true):
    """Relative squared error per row."""
    return ((pred - true).square().flatten(1).sum(1) / true.square().flatten(1).sum(1)).double()


def _rows(idx, n):  # both guidance branches of images idx (the call is branch-major)
    idx = torch.as_tensor(list(idx))
    return torch.cat([idx, idx + n])


def candidates(A, Hs, sig, at, h, fitted):
    """Every candidate's forecast of R at sigma ``at`` from anchors ``A`` (residuals, oldest first),
    their inputs ``Hs``, and the true input ``h`` there; as functions, so a run of a few computes
    only those. ``fitted()`` gives the least-squares weights over 3 anchors (and the input)."""
    def fitted_forecast(with_input):
        w = fitted()[1 if with_input else 0]
        feats = [A[-1], A[-2], A[-3], h - poly(Hs, sig, at, 1)][:4 if with_input else 3]
        return sum(float(wi) * f for wi, f in zip(w, feats))

    return {
        "reuse": lambda: A[-1], "line (today)": lambda: poly(A, sig, at, 1), "parabola": lambda: poly(A, sig, at, 2),
        "cubic": lambda: poly(A, sig, at, 3) if len(A) >= 4 else None,
        "hermite2 sd.5": lambda: hermite2(A, sig, at, 0.5), "hermite2 sd.3": lambda: hermite2(A, sig, at, 0.3),
        "dmd 4": lambda: dmd(A[-4:], sig[-4:], at) if len(A) >= 4 else None,
        "dmd 6": lambda: dmd(A[-6:], sig[-6:], at) if len(A) >= 6 else None,
        "freq: low reuse, high line (FreqCa)": lambda: freq_split(A, sig, at, 1, "reuse", "line"),
        "freq: low line, high reuse": lambda: freq_split(A, sig, at, 1, "line", "reuse"),
        "freq: low parabola, high line": lambda: freq_split(A, sig, at, 1, "quad", "line"),
        "input J/channel + reuse": lambda: jac_channel(A, Hs, sig, at, h, "reuse"),
        "input J/channel + line": lambda: jac_channel(A, Hs, sig, at, h, "line"),
        "input J dense ridge .1": lambda: jac_dense(A[-3:], Hs[-3:], sig, at, h, 0.1),
        "input J dense ridge 1": lambda: jac_dense(A[-3:], Hs[-3:], sig, at, h, 1.0),
        "fitted 3 anchors": lambda: fitted_forecast(False),
        "fitted 3 anchors + input": lambda: fitted_forecast(True),
    }


def _fit(Af, Hf, tf, hf, sig, at):
    feats = [Af[-1], Af[-2], Af[-3], hf - poly(Hf, sig, at, 1)]
    X = torch.stack([f.flatten() for f in feats], 1).double()
    y = tf.flatten().double()[:, None]
    return torch.linalg.lstsq(X[:, :3], y).solution[:, 0], torch.linalg.lstsq(X, y).solution[:, 0]


def screen(data: dict, only: set | None) -> dict:
    R, H = data["R"], data["h"]
    n = data["images"].shape[0]
    fit_rows, eval_rows = _rows(range(n // 2), n), _rows(range(n // 2, n), n)
    S = torch.linspace(1.0, 0.0, STEPS + 1, dtype=torch.float64)[:STEPS]
    errors = {}
    for k in (2, 3, 4):
        for a in range(3 * k, STEPS - 1):
            anchors = [a - i * k for i in range(6) if a - i * k >= 0][::-1]
            sig = [float(S[m]) for m in anchors]
            steps = [a + j for j in range(1, k + 1) if a + j < STEPS]
            take = lambda idx, ms: [R[m][idx].float() for m in ms]  # noqa: E731
            A, Hs = take(eval_rows, anchors), [H[m][eval_rows].float() for m in anchors]
            if only is None or "foca (cache-dit's recursion in sigma)" in only:
                # the previous window's last forecast (at a - 1), made from the anchors before a by the line
                prev = poly(A[:-1], sig[:-1], float(S[a - 1]), 1)
                for t, p in zip(steps, foca(A, sig, [float(S[t]) for t in steps], (prev, float(S[a - 1])))):
                    errors.setdefault("foca (cache-dit's recursion in sigma)", {})[(k, a, t - a)] = \
                        rel_err(p, R[t][eval_rows].float())
            if only is not None and only <= {"foca (cache-dit's recursion in sigma)"}:
                continue
            for t in steps:
                at = float(S[t])
                fit_once = {}

                def fitted():  # the least-squares weights, on the fit half, once per (anchors, step)
                    if not fit_once:
                        fit_once["w"] = _fit(take(fit_rows, anchors), [H[m][fit_rows].float() for m in anchors],
                                             R[t][fit_rows].float(), H[t][fit_rows].float(), sig, at)
                    return fit_once["w"]

                true = R[t][eval_rows].float()
                for name, make in candidates(A, Hs, sig, at, H[t][eval_rows].float(), fitted).items():
                    p = make() if only is None or name in only else None
                    if p is not None:
                        errors.setdefault(name, {})[(k, a, t - a)] = rel_err(p, true)
    return errors


ZONES = {"5-15": (5, 15), "15-30": (15, 30), "30-50": (30, 50), "5-30": (5, 30)}


def summarise(errors: dict) -> dict:
    """Per candidate, spacing and zone of the forecast step: mean over (anchor, horizon) of the
    per-image error (branches averaged), as dB: mean over images, 95th percentile, and the mean
    against the line's."""
    base, out = errors["line (today)"], {}
    for name, d in errors.items():
        row = {}
        for zone, (lo, hi) in ZONES.items():
            for k in (2, 3, 4):
                keys = [key for key in d if key[0] == k and lo <= key[1] + key[2] < hi and key in base]
                if not keys:
                    continue
                per_image = lambda dd: torch.stack([dd[key] for key in keys]).reshape(len(keys), 2, -1).mean(1).mean(0)  # noqa: E731
                e, b = per_image(d), per_image(base)
                row[f"k{k} {zone}"] = {"mean_db": round(10 * math.log10(float(e.mean())), 2),
                                       "p95_db": round(10 * math.log10(float(e.quantile(0.95))), 2),
                                       "vs_line_db": round(10 * math.log10(float(e.mean() / b.mean())), 2)}
        out[name] = row
    return out


def newton_fit(data: dict) -> dict:
    """The Newton-form weights (c0 p0 + slope (p1 - p0) + curvature (p2 - p1), uniform spacing)
    fitted on the first half globally and per zone; scored on the second half against the line."""
    R = data["R"]
    n = data["images"].shape[0]
    fit_rows, eval_rows = _rows(range(n // 2), n), _rows(range(n // 2, n), n)

    def basis(idx, a, k, j):
        ra, rb, rc = (R[m][idx].float().double() for m in (a, a - k, a - 2 * k))
        x = j / k
        return [ra, x * (ra - rb), x * (x + 1) / 2 * (ra - 2 * rb + rc)], R[a + j][idx].float().double()

    cases = [(k, a, j) for k in (2, 3, 4) for a in range(2 * k, STEPS - 1) for j in range(1, k + 1) if a + j < STEPS]
    zone = lambda a, j: min((a + j) // 10, 4)  # noqa: E731

    def solve(cs):
        G, r = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        for k, a, j in cs:
            B, t = basis(fit_rows, a, k, j)
            X = torch.stack([v.flatten() for v in B], 1)
            G += X.T @ X
            r += X.T @ t.flatten()
        return torch.linalg.solve(G, r).tolist()

    weights = {"global fit": solve(cases)}
    per_zone = {z: solve([c for c in cases if zone(c[1], c[2]) == z]) for z in range(5)}
    fixed = {"line": (1, 1, 0), "parabola": (1, 1, 1), "c0 .99, slope .85, curvature .3": (0.99, 0.85, 0.3),
             "slope .85, curvature .3": (1, 0.85, 0.3), "slope .95, curvature .3": (1, 0.95, 0.3),
             "global fit": weights["global fit"]}
    err = {name: {} for name in [*fixed, "zone fit"]}
    for k, a, j in cases:
        B, t = basis(eval_rows, a, k, j)
        den = t.square().flatten(1).sum(1)
        for name in err:
            w = per_zone[zone(a, j)] if name == "zone fit" else fixed[name]
            e = (w[0] * B[0] + w[1] * B[1] + w[2] * B[2] - t).square().flatten(1).sum(1) / den
            err[name][(k, a, j)] = e.reshape(2, -1).mean(0)
    table = {}
    for zn, (lo, hi) in ZONES.items():
        for k in (2, 3, 4):
            keys = [c for c in cases if c[0] == k and lo <= c[1] + c[2] < hi and c[1] >= 3 * k]
            base = torch.stack([err["line"][c] for c in keys]).mean(0)
            for name in err:
                e = torch.stack([err[name][c] for c in keys]).mean(0)
                table.setdefault(name, {})[f"k{k} {zn}"] = {
                    "mean_db": round(10 * math.log10(float(e.mean())), 2),
                    "vs_line_db": round(10 * math.log10(float(e.mean() / base.mean())), 2),
                    "p95_vs_line_db": round(10 * math.log10(float(e.quantile(0.95) / base.quantile(0.95))), 2)}
    return {"weights (c0, slope, curvature)": {"global fit": [round(v, 3) for v in weights["global fit"]],
                                               **{f"zone {10 * z}-{10 * z + 10}": [round(v, 3) for v in w]
                                                  for z, w in per_zone.items()}},
            "scores": table}


def record_blocks(images: int) -> dict:
    """The scored half's trajectories again (a sample does not depend on its batch mates), keeping
    every block's attention and MLP outputs before their gates, the gates, and the deep residual."""
    from sdsv import StagePlan
    from sdsv.evaluation.runner import balanced_prompts
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    model = pipe.target
    d = model.cfg.dim
    step, cur = [], {}
    model.ada.register_forward_hook(lambda m, a, o: cur.__setitem__("mod", o.view(o.shape[0], 6, d)))
    model.blocks[0].register_forward_pre_hook(lambda m, a: cur.__setitem__("h", a[0]))
    for i, blk in enumerate(model.blocks):
        blk.proj.register_forward_hook(lambda m, a, o, i=i: cur.__setitem__(("attn", i), o.half()))
        blk.fc2.register_forward_hook(lambda m, a, o, i=i: cur.__setitem__(("mlp", i), o.half()))

    def close(m, a, o):
        gates = [(cur["mod"] + blk.mod_bias)[:, (2, 5)] for blk in model.blocks]  # [rows, 2, d] per block
        step.append({"R": (o - cur["h"]).float(), "gates": torch.stack(gates, 1),  # [rows, blocks, 2, d]
                     "outs": torch.stack([torch.stack([cur[("attn", i)], cur[("mlp", i)]], 1)
                                          for i in range(len(model.blocks))], 1)})  # [rows, blocks, 2, T, d]
    model.blocks[-1].register_forward_hook(close)
    half = images // 2
    first = START - 20_000 + half
    prompts = balanced_prompts(first + half)[first:]
    pipe(prompts, policy=StagePlan.target_only(STEPS), solver="euler", seed=[START + half + i for i in range(half)])
    return {k: torch.stack([s[k] for s in step]) for k in ("R", "gates", "outs")}


def grain(images: int) -> dict:
    """Relative squared error of the deep residual (as :func:`summarise`) of the line and the
    damped forecast, of the whole residual and per block output with the new sigma's gates."""
    from sdsv.forecast import DAMPED, LINE

    data = record_blocks(images)
    R, gates, outs = data["R"], data["gates"], data["outs"]
    S = torch.linspace(1.0, 0.0, STEPS + 1, dtype=torch.float64)[:STEPS]
    errors = {}
    for fc in (LINE, DAMPED):
        for k in (2, 3, 4):
            for a in range(3 * k, STEPS - 1):
                anchors = [a - i * k for i in range(fc.anchors)][::-1]
                for t in [a + j for j in range(1, k + 1) if a + j < STEPS]:
                    c = fc.coefficients([float(S[m]) for m in anchors], float(S[t]))
                    whole = sum(ci * R[m] for ci, m in zip(c, anchors))
                    parts = sum(ci * outs[m].float() for ci, m in zip(c, anchors))  # [rows, blocks, 2, T, d]
                    gated = (gates[t][:, :, :, None, :] * parts).sum((1, 2))
                    name = "line (today)" if fc is LINE else fc.name
                    errors.setdefault(name, {})[(k, a, t - a)] = rel_err(whole, R[t])
                    errors.setdefault(f"{name}, per block output, gates exact", {})[(k, a, t - a)] = rel_err(gated, R[t])
    return summarise(errors)


def markdown(result: dict) -> str:
    cols = ["k2 5-30", "k3 5-30", "k4 5-30", "k3 5-15", "k3 15-30", "k3 30-50"]
    out = ["# Forecast screen (benchmarks/forecast_screen.py)\n", f"Machine: {result.get('machine', '?')}. "
           f"{result.get('images', '?')} calibration images (seeds 21056..), 50 Euler steps; scored on the second half. "
           "Relative squared error of the deep residual in dB (lower is better) by spacing k and zone of the "
           "forecast step; in brackets against the line (negative: misses less).\n",
           "| forecast | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in result.get("screen", {}).items():
        out.append(f"| {name} | " + " | ".join(f"{row[c]['mean_db']:.2f} ({row[c]['vs_line_db']:+.2f})" if c in row
                                                 else "—" for c in cols) + " |")
    if "fit" in result:
        out += ["\n## Newton-form weights, fitted\n", "```", json.dumps(result["fit"]["weights (c0, slope, curvature)"]),
                "```\n", "| weights | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for name, row in result["fit"]["scores"].items():
            out.append(f"| {name} | " + " | ".join(
                f"{row[c]['mean_db']:.2f} ({row[c]['vs_line_db']:+.2f}; p95 {row[c]['p95_vs_line_db']:+.2f})"
                if c in row else "—" for c in cols) + " |")
    if "grain" in result:
        out += ["\n## The grain: each block's outputs before their gates (diffusers' TaylorSeer) vs the whole residual\n",
                "The scored half sampled again; each forecast of the blocks' attention and MLP outputs is summed "
                "with the gates at the forecast step's own sigma. In brackets against the line of the whole residual.\n",
                "| forecast | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for name, row in result["grain"].items():
            out.append(f"| {name} | " + " | ".join(
                f"{row[c]['mean_db']:.2f} ({row[c]['vs_line_db']:+.2f}; p95 {row[c]['p95_db']:.2f})"
                if c in row else "—" for c in cols) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["record", "screen", "fit", "grain"])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="candidate names separated by ';' (screen: merged into the result)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.images < 2 or args.images % 2:
        ap.error("--images must be an even number >= 2 (half fit, half scored)")
    torch.set_num_threads(args.threads)
    cache = args.out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        if args.what == "record":
            record(args.images, cache)
            return 0
        res_path = args.out / "forecast_screen.json"
        result = json.loads(res_path.read_text()) if res_path.exists() else {}
        if args.what == "grain":
            if result.get("images", args.images) != args.images:
                ap.error(f"the screen on record used {result['images']} images: pass --images {result['images']}")
            result["grain"] = grain(args.images)
            res_path.write_text(json.dumps(result, indent=1))
            (args.out / "forecast_screen.md").write_text(markdown(result))
            print(markdown(result))
            return 0
        path = cache / f"trajectories_{args.images}.pt"
        if not path.exists():
            ap.error(f"no trajectories at {path}: run `record --images {args.images}` first")
        data = torch.load(path)
        result.update(machine=f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                      images=args.images)
        if args.what == "screen":
            only = {n.strip() for n in args.only.split(";")} if args.only else None
            errors = screen(data, only)
            if only is not None:  # the line is the yardstick of every row
                errors.setdefault("line (today)", screen(data, {"line (today)"})["line (today)"])
            result["screen"] = {**result.get("screen", {}), **summarise(errors)}
        else:
            result["fit"] = newton_fit(data)
        res_path.write_text(json.dumps(result, indent=1))
        (args.out / "forecast_screen.md").write_text(markdown(result))
        print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
