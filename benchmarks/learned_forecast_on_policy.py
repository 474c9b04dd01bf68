"""The learned forecaster (learned_forecast.py) trained on the sampler's own draft states instead
of the target's trajectories: the sampler runs the line (an untrained forecaster) in the faithful
windows (tol 0.3 and 0.2) and the fixed cache every 3 on the 48 training images (seeds
21056..21103); at every draft call, per row with three anchors, the anchors (residuals and inputs),
the draft state's input and the deep blocks' true residual there are kept (~2 GB); the net is
trained on them as in learned_forecast.py and sampled on the held-out 48 (21104..21151). Results:
benchmarks/results/learned_forecast/on_policy.txt (docs/tail.md, "Forecasts").

    python benchmarks/learned_forecast_on_policy.py 4000 | tee benchmarks/results/learned_forecast/on_policy.txt   # ~9 min, 2 threads
    python benchmarks/learned_forecast_on_policy.py 4000 2 | tee .../on_policy_2_rounds.txt   # the learned draft collects again (+~7 min)
"""
import sys, math, time, json, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
import learned_forecast as LF, sdsv_kernels
from pathlib import Path
from sdsv import ErrorControlled, FixedInterval
from sdsv.forecast import LINE, SelfDraft
from sdsv.tiny.split import TinyDiTSplit
from sdsv.tiny.pipeline import TinyPipeline
from sdsv.evaluation.runner import balanced_prompts
torch.set_num_threads(2)
pipe = TinyPipeline.from_pretrained(names=("target",))
REC = []

class Recorder(LF.LearnedSplit):
    def forward_with_forecast(self, x, sigma, store, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        width = h.shape[-1]
        g = h
        for blk in s.deep:
            g = blk(g, mod)
        bank = self.self_draft._bank("draft")
        samples, sigmas, _ = bank.rows_of(x.shape[0])
        for m, (b, sg) in enumerate(zip(samples, sigmas)):
            ring = bank.anchors.get((b, m // len(bank.tags)), [])
            if len(ring) >= 3:
                anc = [(a, bank.bank[slot]) for slot, a in ring[-3:]]
                REC.append(([anc[i][1][..., :width].half() for i in (2, 1, 0)] + [anc[i][1][..., width:].half() for i in (2, 1)]
                            + [h[m].half(), (g[m] - h[m]).half()], [anc[2][0], anc[1][0], anc[0][0], sg]))
        return super().forward_with_forecast(x, sigma, store, index, coeffs, labels, guidance)

def drive(split_cls, net, prompts, seeds, policy):
    def make(order=None, forecast=None):
        sp = split_cls(TinyDiTSplit(pipe.target), net); sd = SelfDraft(sp, forecast=LINE, slots=3); sp.self_draft = sd; return sd
    pipe.self_draft = make
    try:
        with torch.inference_mode():
            return pipe(prompts, policy=policy, draft="self", solver="euler", seed=seeds, forecast=LINE)
    finally:
        del pipe.self_draft

train_p, train_s = balanced_prompts(1056 + 48)[1056:], [21056 + i for i in range(48)]
t0 = time.time()
zero = LF.make_net(192).eval()
for tol in (0.3, 0.2):
    drive(Recorder, zero, train_p, train_s, ErrorControlled(50, tol=tol))
drive(Recorder, zero, train_p, train_s, FixedInterval(50, every=3, warmup=3))


def train_on(records, iters):
    """The forecaster trained from scratch on ``records`` (as learned_forecast.py trains it)."""
    P = [torch.stack([r[0][i] for r in records]) for i in range(7)]
    SG = torch.tensor([r[1] for r in records], dtype=torch.float32)
    torch.manual_seed(0)
    net = LF.make_net(192)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gen = torch.Generator().manual_seed(1)
    for it in range(iters):
        idx = torch.randint(len(records), (16,), generator=gen)
        ra, rb, rc, ha, hb, h, true = (p[idx].float() for p in P)
        sa, sb, sc, s = SG[idx].unbind(1)
        f, line, scale = LF.features(ra, rb, rc, ha, hb, h, sa, sb, sc, s)
        loss = ((net(f) * scale + line - true).square().sum((1, 2)) / true.square().sum((1, 2))).mean()
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if it % 1000 == 0:
            print(it, f"{10 * math.log10(loss.item()):.2f}", f"{time.time() - t0:.0f}s", flush=True)
    return net.eval()


ITERS = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
print("round 1: records", len(REC), f"{time.time() - t0:.0f}s", flush=True)
net = train_on(REC, ITERS)
for r in range(2, ROUNDS + 1):  # the latest forecaster drives the windows; trained again on every record
    for tol in (0.3, 0.2):
        drive(Recorder, net, train_p, train_s, ErrorControlled(50, tol=tol))
    print(f"round {r}: records", len(REC), f"{time.time() - t0:.0f}s", flush=True)
    net = train_on(REC, ITERS)

# evaluate on the held-out images
import tail_study as TS
with torch.inference_mode():
    cal = TS.ImageSet(pipe, 21_104, 48, Path('benchmarks/results/tail_study/cache'), 48)
    for label, policy in (("windows, tol 0.3", ErrorControlled(50, tol=0.3)), ("windows, tol 0.2", ErrorControlled(50, tol=0.2)),
                          ("cache every 3", FixedInterval(50, every=3, warmup=3))):
        pipe.self_draft = LF.learned_self_draft(pipe, net)
        try:
            cal.row(f"on-policy learned, {label}", policy)
        finally:
            del pipe.self_draft
