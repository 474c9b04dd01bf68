"""Pure-torch reference of every op the sampler calls: the readable spec, the test oracle and
the fallback backend. Faster backends (Triton, C++/CUDA) must match these numbers.

Conventions shared by all ops
-----------------------------
* A *row* is one (sample, step) state being verified; ``R`` rows are stacked along dim 0 and
  every op reduces over everything else (the latent of one row, any shape, any float dtype,
  any strides).
* Statistics are accumulated and returned in fp32 whatever the input dtype.
* ``gather_combine`` is the one op whose native kernels also take fp64 (accumulating in fp64);
  the others are served by this reference for fp64 latents.
* Rows of one sample are contiguous and in step order; ``window_k[b]`` says how many draft
  steps sample ``b`` proposed, and the verification mode fixes how many rows it owns:
  ``endpoints`` -> 2 rows (``y_0``, ``y_k``), or 1 row when ``k == 0`` (a plain target step);
  ``full`` -> ``k + 1`` rows (``y_0 .. y_k``).
"""

from __future__ import annotations

import torch

# Columns of the pair-statistics matrix, in order.
STAT_COLUMNS = ("dot", "tt", "dd", "diff", "next")
DOT, TT, DD, DIFF, NEXT = range(5)

METRICS = ("cosine", "rel_l2", "state_rel_l2", "x0_rms")
VERIFY_MODES = ("endpoints", "full")
# integer ids of the metrics, shared by the native kernels (csrc/accept_rule.h uses the same order)
METRIC_IDS = {m: i for i, m in enumerate(METRICS)}
_EPS = 1e-20  # guards 0/0 for all-zero rows; far below any real latent norm


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Latent updates are computed in fp32, or fp64 when the latents are fp64."""
    return torch.promote_types(dtype, torch.float32)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).float()


def pair_stats(t: torch.Tensor, d: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Per row, in fp32: ``[dot(t,d), |t|^2, |d|^2, |t-d|^2, |y + h t|^2]`` -> ``[R, 5]``.

    ``t`` target outputs, ``d`` draft outputs, ``y`` the states they were evaluated at,
    ``h`` the step size of each row (``sigma_next - sigma``), all with the same leading ``R``.
    Non-finite inputs give non-finite statistics (never a passing test; see ``accept_mask``).
    """
    tf, df, yf = _rows(t), _rows(d), _rows(y)
    hf = h.reshape(-1, 1).float()
    diff = tf - df
    nxt = yf + hf * tf
    return torch.stack(
        [(tf * df).sum(1), (tf * tf).sum(1), (df * df).sum(1), (diff * diff).sum(1), (nxt * nxt).sum(1)], dim=1
    )


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    # correctly rounded fp32 sqrt (IEEE, as sqrtf / tl.sqrt_rn in the kernels): torch's CPU fp32
    # sqrt is 1 ulp off for ~17% of inputs (torch 2.13, AVX-512), which made accept decisions at
    # tau ties depend on the backend. sqrt in fp64 rounded once to fp32 is exact for fp32 inputs.
    return torch.sqrt(x.double()).float()


def metric_values(stats: torch.Tensor, h: torch.Tensor, sigma: torch.Tensor, numel: int, metric: str) -> torch.Tensor:
    """The acceptance metric of each row from its statistics (METHOD.md section 3.4), fp32 ``[R]``.

    Computed in fp32 with IEEE (correctly rounded) sqrt and division in the order written below;
    every backend follows the same order, so decisions agree exactly, ties included."""
    s = stats.float()
    h = h.reshape(-1).float()
    sigma = sigma.reshape(-1).float()
    if metric == "cosine":
        return s[:, DOT] / _sqrt(s[:, TT] * s[:, DD]).clamp_min(_EPS)
    if metric == "rel_l2":
        return _sqrt(s[:, DIFF]) / _sqrt(s[:, TT]).clamp_min(_EPS)
    if metric == "state_rel_l2":
        return h.abs() * _sqrt(s[:, DIFF]) / _sqrt(s[:, NEXT]).clamp_min(_EPS)
    if metric == "x0_rms":
        return sigma * _sqrt(s[:, DIFF] / numel)
    raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


def accept_mask(values: torch.Tensor, metric: str, tau: float) -> torch.Tensor:
    """Which rows pass. Similarity (``cosine``) must be >= tau, distances <= tau.

    NaN never passes (both comparisons are False), so a broken row is rejected, not accepted.
    """
    return values >= tau if metric == "cosine" else values <= tau


def check_accept_args(metric: str, verify: str) -> None:
    """The argument check every ``accept_commit`` backend runs before launching anything."""
    if metric not in METRIC_IDS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    if verify not in VERIFY_MODES:
        raise ValueError(f"unknown verify mode {verify!r}; choose from {VERIFY_MODES}")


def rows_per_sample(window_k: torch.Tensor, verify: str) -> torch.Tensor:
    """How many verification rows each sample owns (see the module docstring)."""
    if verify == "endpoints":
        return torch.where(window_k > 0, 2, 1)
    if verify == "full":
        return window_k + 1
    raise ValueError(f"unknown verify mode {verify!r}; choose from {VERIFY_MODES}")


def accepted_steps(passed: torch.Tensor, window_k: torch.Tensor, verify: str) -> tuple[torch.Tensor, torch.Tensor]:
    """From the per-row pass mask, each sample's accepted draft steps ``a`` and its commit row.

    ``endpoints``: ``a = k`` iff every row of the sample passes, else 0; commit row = last row
    if accepted else the first. ``full``: ``a`` = number of leading rows ``j < k`` that pass;
    commit row = ``a``. Both returned as int64 ``[B]``; the commit row is local to the sample.
    """
    window_k = window_k.to(torch.int64)
    counts = rows_per_sample(window_k, verify).to(passed.device)
    b = window_k.numel()
    owner = torch.repeat_interleave(torch.arange(b, device=passed.device), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(passed.numel(), device=passed.device) - start[owner]
    if verify == "endpoints":
        fails = torch.zeros(b, dtype=torch.int64, device=passed.device).index_add_(0, owner, (~passed).long())
        ok = (fails == 0) & (window_k > 0)
        a = torch.where(ok, window_k, 0)
        commit = torch.where(ok, counts - 1, 0)
        return a, commit
    # full: a row j < k that fails stops the prefix; the first failing j is the accepted count
    tested = local < window_k[owner]
    failing_j = torch.where(tested & ~passed, local, window_k[owner])
    a = torch.full((b,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=passed.device)
    a = a.scatter_reduce(0, owner, failing_j, reduce="amin")
    return a, a.clone()


def accept_commit(
    stats: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    h: torch.Tensor,
    sigma: torch.Tensor,
    window_k: torch.Tensor,
    metric: str,
    tau: float,
    verify: str,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decide every sample's window and write its next state, for the whole batch at once.

    ``stats`` is ``pair_stats(t, d, y, h)`` over the ``R`` verification rows; ``sigma`` the
    noise level of each row. Returns ``(x_next [B, ...], accepted [B] int64)`` where
    ``x_next[b] = y[r] + h[r] * t[r]`` for the sample's commit row ``r`` (the target step that
    ends every window) and ``accepted[b]`` the number of draft steps kept, so the sample
    advances ``accepted + 1`` steps. No host synchronisation happens here.

    A row passes iff its metric passes (``accept_mask``) AND all five statistics are finite, so
    NaN/inf anywhere in ``t``, ``d`` or ``y`` of a tested row rejects it (``x_next`` may then be
    non-finite; the sampler raises on non-finite statistics).
    """
    numel = y[0].numel()
    values = metric_values(stats, h, sigma, numel, metric)
    # a row passes only if all five statistics are finite: a metric may ignore the column that
    # carries the NaN (cosine never reads |y + h t|^2), and a broken state must not be accepted
    passed = accept_mask(values, metric, tau) & torch.isfinite(stats.float()).all(dim=1)
    a, commit_local = accepted_steps(passed, window_k.to(stats.device), verify)
    counts = rows_per_sample(window_k.to(stats.device).long(), verify)
    row = (torch.cumsum(counts, 0) - counts) + commit_local
    ys, ts, hs = y.index_select(0, row), t.index_select(0, row), h.reshape(-1).index_select(0, row)
    acc = _acc_dtype(y.dtype)
    hs = hs.reshape(-1, *([1] * (y.dim() - 1))).to(acc)
    nxt = (ys.to(acc) + hs * ts.to(acc)).to(y.dtype)
    if out is not None:
        out.copy_(nxt)
        nxt = out
    return nxt, a


def rollout_step(
    x: torch.Tensor,
    v: torch.Tensor,
    h: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One Euler step per row, ``x + h * v``. ``h`` is a scalar or one value per row.
    Computed in fp32 (fp64 for fp64 latents), written (in ``x``'s dtype) into ``out`` when given, e.g. the next
    row of the window buffer, so the verification batch needs no ``torch.cat``."""
    acc = _acc_dtype(x.dtype)
    hf = torch.as_tensor(h, device=x.device).to(acc).reshape(-1, *([1] * (x.dim() - 1)))
    res = (x.to(acc) + hf * v.to(acc)).to(x.dtype)
    if out is None:
        return res
    out.copy_(res)
    return out


# ---- the argument contract of pair_stats / rollout_step / accept_commit ------------------------
# checked once at the op boundary (sdsv_kernels' public functions) for every backend alike, so a
# backend never sees inputs another one would refuse or broadcast differently

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _latents(op: str, **named: torch.Tensor) -> torch.Tensor:
    """Tensors of one latent layout ``[R, *F]``: same shape, same floating dtype, same device."""
    items = list(named.items())
    for name, x in items:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(x).__name__}")
    first_name, first = items[0]
    if first.dtype not in _FLOATS:
        raise TypeError(f"{op}: {first_name} must be a floating tensor (fp16/bf16/fp32/fp64), got {first.dtype}")
    if first.dim() < 1:
        raise ValueError(f"{op}: {first_name} must be [R, ...] (one row per state), got a 0-d tensor")
    for name, x in items[1:]:
        if x.shape != first.shape:
            raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}, {first_name} has {tuple(first.shape)}; "
                             "they must match")
        if x.dtype != first.dtype:
            raise TypeError(f"{op}: {name} is {x.dtype}, {first_name} is {first.dtype}; they must match "
                            "(cast them: a mixed call would compute in a backend-dependent precision)")
        if x.device != first.device:
            raise ValueError(f"{op}: {name} is on {x.device}, {first_name} on {first.device}")
    return first


def _per_row(op: str, name: str, x, rows: int, like: torch.Tensor, scalar_ok: bool = True) -> None:
    """A per-row floating vector ``[R]`` (or, where allowed, one value for all rows)."""
    if not isinstance(x, torch.Tensor):
        if scalar_ok and isinstance(x, (int, float)) and not isinstance(x, bool):
            return
        raise TypeError(f"{op}: {name} must be a tensor{' or a number' if scalar_ok else ''}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: {name} must be floating, got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{op}: {name} is on {x.device}, the latents on {like.device}")
    n = x.numel()
    if not (n == rows or scalar_ok and n == 1) or x.dim() > 1 and x.shape[0] != n:
        want = f"{rows} values (one per row)" + (" or one value" if scalar_ok else "")
        raise ValueError(f"{op}: {name} must hold {want}, got shape {tuple(x.shape)}")


def _out(op: str, out, like: torch.Tensor, shape: tuple) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{op}: out must be a tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"{op}: out must be {tuple(shape)} {like.dtype} on {like.device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    # (not while torch.compile traces: dynamo cannot trace this check; the op boundary is opaque there)
    if not torch.compiler.is_compiling() and torch._debug_has_internal_overlap(out) == 1:
        raise ValueError(f"{op}: out has internal overlap (an expanded view?): its rows would overwrite each other")


def check_pair_stats_args(t, d, y, h) -> None:
    first = _latents("pair_stats", t=t, d=d, y=y)
    _per_row("pair_stats", "h", h, first.shape[0], first, scalar_ok=False)


def check_rollout_args(x, v, h, out=None) -> None:
    first = _latents("rollout_step", x=x, v=v)
    _per_row("rollout_step", "h", h, first.shape[0], first)
    _out("rollout_step", out, first, first.shape)


def check_accept_commit_args(stats, y, t, h, sigma, window_k, metric, verify, out=None) -> None:
    check_accept_args(metric, verify)
    first = _latents("accept_commit", y=y, t=t)
    rows = first.shape[0]
    if not isinstance(stats, torch.Tensor) or tuple(stats.shape) != (rows, 5) or stats.dtype != torch.float32:
        got = f"{tuple(stats.shape)} {stats.dtype}" if isinstance(stats, torch.Tensor) else type(stats).__name__
        raise ValueError(f"accept_commit: stats must be pair_stats' [R={rows}, 5] fp32, got {got}")
    _per_row("accept_commit", "h", h, rows, first, scalar_ok=False)
    _per_row("accept_commit", "sigma", sigma, rows, first, scalar_ok=False)
    if not isinstance(window_k, torch.Tensor) or window_k.dim() != 1 or window_k.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"accept_commit: window_k must be a 1-d int tensor (one window per sample), got "
                        f"{window_k.dtype if isinstance(window_k, torch.Tensor) else type(window_k).__name__}")
    _out("accept_commit", out, first, (window_k.shape[0], *first.shape[1:]))


def check_gather_combine_args(
    base: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    coeffs: torch.Tensor,
    out: torch.Tensor | None = None,
    check_range: bool = True,
) -> None:
    """The argument check every ``gather_combine`` backend runs before launching anything, and
    the fake (tracing) implementation too, with ``check_range=False`` (no values there). See
    :func:`gather_combine` for the contract. Raises ``TypeError`` for a wrong dtype and
    ``ValueError`` for a wrong shape, device or index."""
    given = {"base": base, "bank": bank, "index": index, "coeffs": coeffs, **({"out": out} if out is not None else {})}
    for name, x in given.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"gather_combine: {name} must be a tensor, got {type(x).__name__}")
    if not base.is_floating_point():
        raise TypeError(f"gather_combine: base must be a floating tensor, got {base.dtype}")
    if base.dim() < 1 or base.shape[0] < 1:
        raise ValueError(f"gather_combine: base must be [R, *F] with R >= 1, got shape {tuple(base.shape)}")
    n_rows, feat = base.shape[0], tuple(base.shape[1:])
    if bank.dtype != base.dtype:
        raise TypeError(f"gather_combine: bank has dtype {bank.dtype}, base has {base.dtype}; they must match")
    if bank.dim() != base.dim() or tuple(bank.shape[1:]) != feat:
        want = ", ".join(["S", *map(str, feat)])
        raise ValueError(f"gather_combine: bank must be [{want}] like base's rows, got shape {tuple(bank.shape)}")
    if index.dtype != torch.int64:
        raise TypeError(f"gather_combine: index must be int64, got {index.dtype}")
    if index.dim() != 2 or index.shape[0] != n_rows:
        raise ValueError(f"gather_combine: index must be [R={n_rows}, A], got shape {tuple(index.shape)}")
    n_terms = index.shape[1]
    acc = _acc_dtype(base.dtype)
    if coeffs.dtype != acc:
        raise TypeError(f"gather_combine: coeffs must be {acc} for {base.dtype} data, got {coeffs.dtype}")
    if tuple(coeffs.shape) != (n_rows, n_terms + 1):
        raise ValueError(
            f"gather_combine: coeffs must be [R, A+1] = [{n_rows}, {n_terms + 1}], got shape {tuple(coeffs.shape)}"
        )
    if out is not None:
        if out.dtype != base.dtype:
            raise TypeError(f"gather_combine: out has dtype {out.dtype}, base has {base.dtype}; they must match")
        if out.shape != base.shape:
            raise ValueError(f"gather_combine: out must have base's shape {tuple(base.shape)}, got {tuple(out.shape)}")
    for name, x in given.items():
        if x.device != base.device:
            raise ValueError(f"gather_combine: {name} is on {x.device}, base on {base.device}; all must be on one device")
    # The range is checked on the host only when index lives there: for a GPU index, min/max
    # would sync the device on every draft call. There the native kernels never read outside
    # bank (a row with an out-of-range index comes out NaN) and the reference's gather asserts.
    if check_range and n_terms and index.device.type == "cpu":
        n_slots = bank.shape[0]
        bad = (index < 0) | (index >= n_slots)
        if bad.any():
            r, a = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"gather_combine: index[{r}, {a}] = {int(index[r, a])} is out of range for a bank of {n_slots} slots"
            )


def gather_combine(
    base: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    coeffs: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per row, a linear combination of ``base`` and rows gathered from ``bank``::

        gather_combine(base, bank, index, coeffs, out=None) -> out
          base:   [R, *F] floating tensor (any strides), R >= 1
          bank:   [S, *F] same dtype and device as base (any strides; contiguous in practice)
          index:  [R, A] int64, 0 <= index < S (A >= 0; A == 0 means out = coeffs[:,0] * base)
          coeffs: [R, A+1] fp32 (fp64 when base is fp64), same device
          out[r] = coeffs[r,0] * base[r] + sum_a coeffs[r,a+1] * bank[index[r,a]]
          accumulated in fp32 (fp64 for fp64 data), stored in base's dtype.

    The terms are added in that order (``base`` first, then ``a = 0, 1, ...``). ``out`` (base's
    shape and dtype) may be ``base`` itself, or rows of ``bank``'s own buffer that the call does not
    read (the multistep sampler writes a window's next state and history rows into the round
    buffer it gathers from); it must not overlap a row it reads. Indices may repeat.

    Why it exists: (1) the forecast self-draft. A draft call adds to the cheap part's hidden
    state ``base`` the forecast of the deep blocks' residual, a per-row linear combination
    (Taylor / finite differences in sigma) of residuals recorded at earlier target evaluations.
    Those live in a bank of slots (a ring of a few anchors per sample and guidance branch);
    gathering by index inside the kernel avoids copying anchor rows that are tens of MB each at
    Flux size. (2) Linear multistep solver updates ``x c0 + sum_i v_i c_i`` with per-row
    coefficients (Euler is ``(1, h)``) are the same op.
    """
    check_gather_combine_args(base, bank, index, coeffs, out)
    acc = _acc_dtype(base.dtype)
    col = (-1,) + (1,) * (base.dim() - 1)  # one coefficient per row, broadcast over the row
    res = coeffs[:, 0].reshape(col) * base.to(acc)
    for a in range(index.shape[1]):
        res = res + coeffs[:, a + 1].reshape(col) * bank.index_select(0, index[:, a]).to(acc)
    res = res.to(base.dtype)
    if out is None:
        return res
    out.copy_(res)
    return out
