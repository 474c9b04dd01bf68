"""A forecaster learned per model (docs/tail.md, "Forecasts"): a per-token MLP that corrects the
line through the self-draft's anchors, trained on the tiny target's own trajectories, scored off
line like forecast_screen.py's candidates and then inside the sampler.

The forecaster reads, per image token, the newest three anchors of the deep residual (``r_a``,
``r_a - r_b``, ``r_b - r_c``) and, unless ``--no-input``, the draft step's own hidden state entering
the deep blocks (against the anchors' line and the newest anchor's), all divided by the rms of
``r_a``, with the spacing in sigma (``x = (s - s_a) / (s_a - s_b)``, ``(s_b - s_c) / (s_a -
s_b)``, ``s_a``, the spacing in steps); it outputs a correction to the line in sigma through
``r_a``, ``r_b``, and is trained on the relative squared error of the forecast residual, for
anchors spaced 1-4 steps apart and forecasts 1-4 steps ahead (the windows' range).

Data: forecast_screen.py's recorded trajectories (``record --images 96``, seeds 21056..21151):
trained on the first 48 images, scored on the other 48 (off line), and sampled on those 48
(seeds 21104..21151) inside the faithful windows and the fixed cache, beside the line and the
damped default.

    python benchmarks/forecast_screen.py record --images 96    # once (~2 min)
    python benchmarks/learned_forecast.py                      # ~10 min training + ~8 min sampling, one thread
    python benchmarks/learned_forecast.py --no-input
    python benchmarks/learned_forecast.py --diagnose           # ~1 min: where the off-line gain goes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import sdsv_kernels

sys.path.insert(0, str(Path(__file__).parent))
from tail_study import InputKeepingSplit  # noqa: E402 - a sibling lab script

STEPS = 50
SIGMAS = torch.linspace(1.0, 0.0, STEPS + 1)[:STEPS]  # the tiny pipeline's (shift 1)
OUT = Path("benchmarks/results/learned_forecast")
TRAJECTORIES = Path("benchmarks/results/forecast_screen/cache/trajectories_96.pt")


def features(ra, rb, rc, ha, hb, h, sa, sb, sc, s, use_input: bool = True):
    """``(features, line, scale)`` per token: residual anchors ``r*`` and their inputs ``h*``
    ``[rows, tokens, dim]`` (newest first), the draft step's input ``h``, sigmas ``[rows]``."""
    v = lambda t: t.reshape(-1, 1, 1)  # noqa: E731
    x = (s - sa) / (sa - sb)
    line = ra + v(x) * (ra - rb)
    scale = ra.square().mean((1, 2), keepdim=True).sqrt().clamp_min(1e-12)
    h_line = ha + v(x) * (ha - hb)
    if not use_input:
        h = h_line  # the anchors alone
    f = torch.cat([p / scale for p in (ra, ra - rb, rb - rc, h - h_line, h - ha)], -1)
    spacing = torch.stack([x, x * x, (sb - sc) / (sa - sb), sa, (sa - sb) * STEPS], -1)
    return torch.cat([f, spacing[:, None, :].expand(-1, f.shape[1], -1).to(f.dtype)], -1), line, scale


def make_net(dim: int, width: int = 512) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(5 * dim + 5, width), torch.nn.GELU(), torch.nn.Linear(width, width),
                              torch.nn.GELU(), torch.nn.Linear(width, dim))
    torch.nn.init.zeros_(net[-1].weight)  # starts as the line
    torch.nn.init.zeros_(net[-1].bias)
    return net


CASES = [(k1, k2, a, j) for k1 in range(1, 5) for k2 in range(1, 5) for a in range(k1 + k2, STEPS - 1)
         for j in range(1, 5) if a + j < STEPS]


def _case(R, H, rows, case, use_input):
    k1, k2, a, j = case
    b, c, t = a - k1, a - k1 - k2, a + j
    g = lambda T, m: T[m][rows].float()  # noqa: E731
    sig = lambda m: SIGMAS[m].expand(len(rows))  # noqa: E731
    f, line, scale = features(g(R, a), g(R, b), g(R, c), g(H, a), g(H, b), g(H, t), sig(a), sig(b), sig(c), sig(t),
                              use_input)
    return f, line, scale, g(R, t)


def relative_error(net, f, line, scale, true) -> torch.Tensor:
    """The relative squared error of the forecast residual, averaged over the minibatch."""
    return ((net(f) * scale + line - true).square().sum((1, 2)) / true.square().sum((1, 2))).mean()


def fit(dim: int, batch, iters: int, seed: int = 0, loss=relative_error) -> torch.nn.Module:
    """A forecaster trained on ``loss(net, *batch(gen))``: by default ``batch(gen)`` gives one
    minibatch ``(features, line, scale, true residual)`` and the loss is :func:`relative_error`."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    net = make_net(dim)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in tqdm(range(iters), desc="training", mininterval=5.0):
        value = loss(net, *batch(gen))
        opt.zero_grad()
        value.backward()
        opt.step()
        sched.step()
    return net.eval()


def train(R, H, rows, use_input: bool, iters: int, seed: int = 0) -> torch.nn.Module:
    """:func:`fit` on the recorded trajectories: 16 random rows of a random case per step."""
    def batch(gen):
        case = CASES[int(torch.randint(len(CASES), (1,), generator=gen))]
        return _case(R, H, rows[torch.randperm(len(rows), generator=gen)[:16]], case, use_input)
    return fit(R.shape[-1], batch, iters, seed)


def score(net, R, H, rows, use_input: bool, images: int) -> dict:
    """Relative squared error of the residual in dB (mean over images of the per-image mean,
    branches averaged; and its 95th percentile), the learned forecast against the line."""
    zones = {"uniform k2, steps 5-30": lambda k1, k2, a, j: k1 == k2 == 2 and j <= 2 and a >= 6 and 5 <= a + j < 30,
             "uniform k3, steps 5-30": lambda k1, k2, a, j: k1 == k2 == 3 and j <= 3 and a >= 9 and 5 <= a + j < 30,
             "uniform k4, steps 5-30": lambda k1, k2, a, j: k1 == k2 == 4 and j <= 4 and a >= 12 and 5 <= a + j < 30,
             "any spacing, j <= k1, steps 5-30": lambda k1, k2, a, j: j <= k1 and 5 <= a + j < 30,
             "any spacing, j <= k1, steps 30-50": lambda k1, k2, a, j: j <= k1 and 30 <= a + j < 50}
    out = {}
    with torch.no_grad():
        for zone, keep in zones.items():
            err = {"line": [], "learned": []}
            for case in CASES:
                if keep(*case):
                    f, line, scale, true = _case(R, H, rows, case, use_input)
                    den = true.square().flatten(1).sum(1)
                    err["line"].append((line - true).square().flatten(1).sum(1) / den)
                    err["learned"].append((net(f) * scale + line - true).square().flatten(1).sum(1) / den)
            per = {k: torch.stack(e).reshape(len(e), 2, images).mean(1).mean(0) for k, e in err.items()}
            db = lambda t: round(10 * math.log10(float(t)), 2)  # noqa: E731
            out[zone] = {k: {"mean_db": db(p.mean()), "p95_db": db(p.quantile(0.95))} for k, p in per.items()}
    return out


def three_anchors(bank, model_rows: int) -> list:
    """``(model row, its sigma, [(sigma, bank row) of its key's newest three anchors, oldest
    first])`` for every row of a draft call whose key has three anchors on record."""
    samples, sigmas, _ = bank.rows_of(model_rows)
    out = []
    for m, (b, sg) in enumerate(zip(samples, sigmas)):
        ring = bank.anchors.get((b, m // len(bank.tags)), [])
        if len(ring) >= 3:
            out.append((m, sg, [(a, bank.bank[slot].float()) for slot, a in ring[-3:]]))
    return out


class LearnedSplit(InputKeepingSplit):
    """The tiny target's split with the learned forecast: the bank keeps ``[residual, h_in]`` per
    anchor (``InputKeepingSplit``); a draft row with three anchors on record takes the line plus
    the net's correction, one with fewer the line (the coefficients the sampler gives, ``LINE``).
    ``self_draft`` (set after construction): the ``SelfDraft`` whose bank it reads."""

    def __init__(self, split, net, use_input: bool = True):
        super().__init__(split)
        self.net, self.use_input, self.self_draft = net, use_input, None

    def forward_with_forecast(self, x, sigma, store, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        width = h.shape[-1]
        out = sdsv_kernels.gather_combine(h, store[..., :width].contiguous(), index, coeffs)
        ms, residual = self.learned_residual(h, x.shape[0])
        if ms is not None:
            out = out.clone()
            out[ms] = (h[ms].float() + residual).to(out.dtype)
        return s._leave(out, cond, mod)

    def learned_residual(self, h, model_rows: int):
        """``(model rows with three anchors, their forecast deep residual)``, ``(None, None)`` if none."""
        width = h.shape[-1]
        got = three_anchors(self.self_draft._bank("draft"), model_rows)
        if not got:
            return None, None
        ms = torch.tensor([m for m, _, _ in got])
        part = lambda i, lo: torch.stack([anc[i][1][..., lo:lo + width] for _, _, anc in got])  # noqa: E731
        sig = lambda i: torch.tensor([anc[i][0] for _, _, anc in got], dtype=torch.float32)  # noqa: E731
        f, line, scale = features(part(2, 0), part(1, 0), part(0, 0), part(2, width), part(1, width),
                                  h[ms].float(), sig(2), sig(1), sig(0),
                                  torch.tensor([sg for _, sg, _ in got], dtype=torch.float32), self.use_input)
        return ms, line + self.net(f) * scale


def learned_self_draft(pipe, net, use_input: bool = True, split=None):
    """A ``pipe.self_draft`` replacement (the tiny pipeline's hook for its self-draft) drafting
    with ``split`` (default :class:`LearnedSplit`, or a subclass of it)."""
    from sdsv.forecast import LINE, SelfDraft
    from sdsv.tiny.split import TinyDiTSplit

    def make(order=None, forecast=None):
        made = (split or LearnedSplit)(TinyDiTSplit(pipe.target), net, use_input)
        sd = SelfDraft(made, forecast=forecast or LINE, slots=3)  # the rows with fewer than three anchors
        made.self_draft = sd
        return sd
    return make


def sample_rows(net, use_input: bool, cache: Path) -> list[dict]:
    import tail_study as TS
    from sdsv import ErrorControlled, FixedInterval
    from sdsv.forecast import DAMPED, LINE
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    rows = []
    with torch.inference_mode():
        scored = TS.ImageSet(pipe, 21_104, 48, cache, 48)  # the trajectories' second half: not trained on
        for label, policy in (("windows, tol 0.2", ErrorControlled(50, tol=0.2)),
                              ("windows, tol 0.3", ErrorControlled(50, tol=0.3)),
                              ("cache every 3", FixedInterval(50, every=3, warmup=3)),
                              ("cache every 2", FixedInterval(50, every=2, warmup=3))):
            pipe.self_draft = learned_self_draft(pipe, net, use_input)
            try:
                rows.append(scored.row(f"learned, {label}", policy))
            finally:
                del pipe.self_draft
            forecast = DAMPED if label.startswith("windows, tol 0.3") else LINE
            rows.append(scored.row(f"{forecast.name}, {label}", policy, forecast=forecast))
    return rows


def diagnose(net, pipe, use_input: bool) -> dict:
    """Where the off-line gain goes: the one-step *velocity* error (after the output layer) on the
    target's own trajectories (k = 3, steps 5-30, the held-out half), and the same error inside
    the sampler at the draft's own states (8 held-out images, the fixed cache every 3, the deep
    blocks run on each draft state for the truth), for the line, DAMPED and the learned forecast."""
    from sdsv import FixedInterval
    from sdsv.evaluation.runner import balanced_prompts
    from sdsv.forecast import DAMPED, LINE
    from sdsv.tiny.model import timestep_embedding

    m = pipe.target
    data = torch.load(TRAJECTORIES)
    R, H, n = data["R"], data["h"], data["images"].shape[0]
    prompts = balanced_prompts(1056 + n)[1056:]  # the recorded images' prompts (seeds 21056..)
    labels = torch.cat([pipe.encode(prompts), torch.tensor(m.null_labels).expand(n, -1)])  # branch-major
    held = torch.cat([torch.arange(n // 2, n), torch.arange(n // 2, n) + n])
    lab = labels[held]
    err = {"line": [], "damped": [], "learned": []}
    with torch.no_grad():
        for a in range(9, STEPS - 1):
            for j in (1, 2, 3):
                t = a + j
                if not 5 <= t < 30:
                    continue
                sig, at = [float(SIGMAS[i]) for i in (a - 6, a - 3, a)], float(SIGMAS[t])
                A = [R[i][held].float() for i in (a - 6, a - 3, a)]
                emb = m.t_mlp(timestep_embedding(SIGMAS[t].expand(len(held)), m.cfg.dim))
                cond, _ = m._modulated(emb + m.color_emb(lab[:, 0]) + m.shape_emb(lab[:, 1]), None, len(held))
                h_t = H[t][held].float()
                v_true = m.head(h_t + R[t][held].float(), cond)
                f, line, scale = _case(R, H, held, (3, 3, a, j), use_input)[:3]
                preds = {name: sum(c * r for c, r in zip(fc.coefficients(sig, at), A))
                         for name, fc in (("line", LINE), ("damped", DAMPED))}
                preds["learned"] = line + net(f) * scale
                for name, p in preds.items():
                    v = m.head(h_t + p, cond)
                    err[name].append((v - v_true).square().flatten(1).sum(1) / v_true.square().flatten(1).sum(1))
    db = lambda x: round(10 * math.log10(float(x)), 2)  # noqa: E731
    out = {"velocity error on the target's trajectories, k = 3, steps 5-30, dB":
           {k: db(torch.stack(e).reshape(len(e), 2, -1).mean(1).mean(0).mean()) for k, e in err.items()}}
    del R, H, data

    class Probe(LearnedSplit):  # the learned draft, scored at each draft state against the deep blocks' truth
        def forward_with_forecast(self, x, sigma, store, index, coeffs, labels, guidance=None):
            s = self.split
            h, cond, mod = s._enter(x, sigma, labels, guidance)
            g = h
            for blk in s.deep:
                g = blk(g, mod)
            v_true = s._leave(g, cond, mod)
            v_line = s._leave(sdsv_kernels.gather_combine(h, store[..., :h.shape[-1]].contiguous(), index, coeffs),
                              cond, mod)
            v = super().forward_with_forecast(x, sigma, store, index, coeffs, labels, guidance)
            den = v_true.square().flatten(1).sum(1)
            seen["line"].append(((v_line - v_true).square().flatten(1).sum(1) / den).mean())
            seen["learned"].append(((v - v_true).square().flatten(1).sum(1) / den).mean())
            return v

    seen = {"line": [], "learned": []}

    pipe.self_draft = learned_self_draft(pipe, net, use_input, Probe)
    try:
        with torch.inference_mode():
            pipe(balanced_prompts(1104 + 8)[1104:], policy=FixedInterval(STEPS, every=3, warmup=3), draft="self",
                 solver="euler", seed=[21_104 + i for i in range(8)], forecast=LINE)
    finally:
        del pipe.self_draft
    out["velocity error at the sampler's own draft states (learned draft, cache every 3, 8 images), dB"] = {
        k: db(torch.stack(v).mean()) for k, v in seen.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=6000)
    ap.add_argument("--no-input", action="store_true", help="the anchors alone (not the draft step's own input)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--diagnose", action="store_true",
                    help="only the velocity-error diagnostics, with the net a previous run saved")
    args = ap.parse_args(argv)
    if args.iters < 1:
        ap.error("--iters must be >= 1")
    if not TRAJECTORIES.exists():
        ap.error(f"{TRAJECTORIES} is missing: run `python benchmarks/forecast_screen.py record --images 96` first")
    torch.set_num_threads(args.threads)
    use_input = not args.no_input
    name = "learned_forecast" + ("_no_input" if args.no_input else "")
    weights = args.out / "cache" / f"{name}.pt"
    if args.diagnose:
        if not weights.exists():
            ap.error(f"{weights} is missing: run without --diagnose first")
        from sdsv.tiny.pipeline import TinyPipeline

        net = make_net(192)
        net.load_state_dict(torch.load(weights))
        result = diagnose(net.eval(), TinyPipeline.from_pretrained(names=("target",)), use_input)
        (args.out / f"{name}_diagnose.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return 0
    data = torch.load(TRAJECTORIES)
    R, H, n = data["R"], data["h"], data["images"].shape[0]
    rows = lambda idx: torch.cat([torch.as_tensor(idx), torch.as_tensor(idx) + n])  # noqa: E731 - both branches
    t0 = time.time()
    net = train(R, H, rows(list(range(n // 2))), use_input, args.iters)
    train_s = time.time() - t0
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    offline = score(net, R, H, rows(list(range(n // 2, n))), use_input, n - n // 2)
    del R, H, data
    sampled = sample_rows(net, use_input, Path("benchmarks/results/tail_study/cache"))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"use_input": use_input, "iters": args.iters, "train_s": round(train_s), "offline": offline,
              "sampled": sampled, "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}"}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    md = [f"## A forecaster learned per model ({'with' if use_input else 'without'} the draft step's input)\n",
          f"Trained {args.iters} steps ({train_s:.0f} s) on seeds 21056..21103; scored on 21104..21151. "
          f"{result['machine']}.\n", "| off line: relative error of the residual, dB | line mean / p95 | learned mean / p95 |",
          "|---|---|---|"]
    md += [f"| {z} | {d['line']['mean_db']} / {d['line']['p95_db']} | {d['learned']['mean_db']} / {d['learned']['p95_db']} |"
           for z, d in offline.items()]
    md += ["", "| sampled, 48 images | target evals | fidelity mean / p5 / p1 / worst |", "|---|---:|---|"]
    md += [f"| {r['method']} | {r['target_evals']} | {r['fidelity']['mean']} / {r['fidelity']['p5']} / "
           f"{r['fidelity']['p1']} / {r['fidelity']['worst']} |" for r in sampled]
    (args.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
