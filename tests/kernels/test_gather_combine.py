"""gather_combine on every native backend vs the reference, the reference vs a float64 oracle,
the out= form, the custom ops under torch.compile, order-1 extrapolation, and the argument checks.

Tolerance (per element): kernel and reference both accumulate in fp32 (fp64 for fp64 data) in
the same term order and round once to the data dtype, so they differ by the output rounding
(conftest.OUT_TOL's rtol, relative to the value; none for fp64) plus a few accumulation ulps of
the terms' scale ``|c_0 base| + sum_a |c_a bank[index_a]|`` (the value itself may cancel).
"""

from __future__ import annotations

import pytest
import torch

import sdsv_kernels
from sdsv_kernels import reference

from .conftest import DTYPES, OUT_TOL, backend_params

ALL_DTYPES = {**DTYPES, "fp64": torch.float64}
# (R, feature shape F, bank slots S, terms A): odd sizes; the last crosses the interpreter's
# 8192-element block and the C++ 32768-element chunk
CASES = [(1, (7,), 3, 0), (1, (5, 13), 4, 1), (3, (3, 5, 7), 5, 2), (6, (2, 301), 7, 3), (9, (4, 33, 17), 4, 3),
         (2, (3, 11001), 3, 2)]
CASE_IDS = [f"R{r}-F{'x'.join(map(str, f))}-S{s}-A{a}" for r, f, s, a in CASES]


@pytest.fixture(params=[pytest.param(("reference", "cpu"), id="reference-cpu")] + backend_params())
def any_backend(request):
    """Like conftest's ``backend``, plus the reference itself (for behaviour every backend shares)."""
    name, dev = request.param
    with sdsv_kernels.use_backend(name):
        yield name, dev


def _acc(dtype):
    return torch.promote_types(dtype, torch.float32)


def _inputs(rows, feat, slots, terms, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    # drawn in fp64, so fp64 data carries bits that an fp32 path would lose
    base = torch.randn((rows, *feat), generator=g, dtype=torch.float64)
    bank = torch.randn((slots, *feat), generator=g, dtype=torch.float64)
    index = torch.randint(0, slots, (rows, terms), generator=g)
    if terms >= 2:
        index[0, 1] = index[0, 0]  # a slot used twice by one row
    coeffs = torch.randn((rows, terms + 1), generator=g, dtype=torch.float64)
    return base.to(device, dtype), bank.to(device, dtype), index.to(device), coeffs.to(device, _acc(dtype))


def _oracle(base, bank, index, coeffs):
    """The exact value (float64 from the upcast inputs) and the terms' scale, per element."""
    col = (-1,) + (1,) * (base.dim() - 1)
    c = coeffs.cpu().double()
    exact = c[:, 0].reshape(col) * base.cpu().double()
    scale = exact.abs()
    for a in range(index.shape[1]):
        term = c[:, a + 1].reshape(col) * bank.cpu().double()[index[:, a].cpu()]
        exact, scale = exact + term, scale + term.abs()
    return exact, scale


def _assert_close(got, want, base, bank, index, coeffs):
    dtype = base.dtype
    exact, scale = _oracle(base, bank, index, coeffs)
    eps = torch.finfo(_acc(dtype)).eps
    rtol = OUT_TOL[dtype]["rtol"] if dtype in OUT_TOL else 0.0
    bound = rtol * exact.abs() + 2 * (index.shape[1] + 2) * eps * scale + 1e-30
    err = (got.cpu().double() - want.cpu().double()).abs()
    worst = (err / bound).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"error {worst:.3g}x the bound (max abs err {err.max().item():.3g})"


@pytest.mark.parametrize("rows,feat,slots,terms", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", ALL_DTYPES.values(), ids=ALL_DTYPES.keys())
def test_matches_reference(backend, rows, feat, slots, terms, dtype):
    name, dev = backend
    base, bank, index, coeffs = _inputs(rows, feat, slots, terms, dtype, dev)
    assert sdsv_kernels.resolve(base, "gather_combine") == name  # fp64 too: this op's kernels take it
    got = sdsv_kernels.gather_combine(base, bank, index, coeffs)
    assert got.dtype == dtype and got.shape == base.shape and got.device.type == dev
    ref = reference.gather_combine(base.cpu(), bank.cpu(), index.cpu(), coeffs.cpu())
    _assert_close(got, ref, base, bank, index, coeffs)


@pytest.mark.parametrize("dtype", ALL_DTYPES.values(), ids=ALL_DTYPES.keys())
def test_reference_matches_oracle(dtype):
    for rows, feat, slots, terms in CASES:
        base, bank, index, coeffs = _inputs(rows, feat, slots, terms, dtype, "cpu", seed=rows)
        exact, _ = _oracle(base, bank, index, coeffs)
        _assert_close(reference.gather_combine(base, bank, index, coeffs), exact, base, bank, index, coeffs)


@pytest.mark.parametrize("layout", ["base-transposed", "base-row-strided", "bank-row-strided", "bank-transposed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_non_contiguous(backend, layout, dtype):
    _, dev = backend
    base, bank, index, coeffs = _inputs(8, (6, 37), 10, 3, dtype, dev, seed=3)
    if layout == "base-transposed":  # elements of a row not contiguous: one documented copy
        base = base.transpose(1, 2)
        bank = bank.transpose(1, 2)  # bank must share F = (37, 6)
    elif layout == "base-row-strided":  # every other row of a buffer: read in place
        base, index, coeffs = base[::2], index[::2], coeffs[::2]
    elif layout == "bank-row-strided":  # every other slot
        bank, index = bank[::2], index % 5
    else:
        bank = bank.transpose(1, 2).contiguous().transpose(1, 2)
    assert not (base.is_contiguous() and bank.is_contiguous())
    got = sdsv_kernels.gather_combine(base, bank, index, coeffs)
    ref = reference.gather_combine(base.cpu(), bank.cpu(), index.cpu(), coeffs.cpu())
    _assert_close(got, ref, base, bank, index, coeffs)


@pytest.mark.parametrize("dtype", ALL_DTYPES.values(), ids=ALL_DTYPES.keys())
def test_out_may_be_rows_of_the_bank_it_does_not_read(any_backend, dtype):
    """The multistep sampler's pattern: one buffer is the bank, and the result goes to other rows
    of that same buffer (strided, as a window's next states are); the rows read stay as they were."""
    _, dev = any_backend
    base, bank, index, coeffs = _inputs(3, (4, 29), 5, 2, dtype, dev, seed=4)
    ref = reference.gather_combine(base.cpu(), bank.cpu(), index.cpu(), coeffs.cpu())
    buf = torch.cat([bank, torch.zeros((7, 4, 29), device=dev, dtype=dtype)])  # rows 0-4: the bank
    before = buf[:5].clone()
    out = buf[6:12:2]  # rows 6, 8, 10: never read
    assert sdsv_kernels.gather_combine(base, buf, index, coeffs, out=out) is out
    _assert_close(buf[6:12:2], ref, base, bank, index, coeffs)
    assert torch.equal(buf[:5], before) and (buf[[5, 7, 9, 11]] == 0).all()


@pytest.mark.parametrize("dtype", ALL_DTYPES.values(), ids=ALL_DTYPES.keys())
def test_out_forms(any_backend, dtype):
    """out = rows of a buffer (a slice, strided rows, a transposed view through staging) or base
    itself (the in-place update ``x <- c0 x + sum v c``); nothing else in the buffer changes."""
    _, dev = any_backend
    base, bank, index, coeffs = _inputs(3, (4, 29), 5, 2, dtype, dev, seed=2)
    ref = reference.gather_combine(base.cpu(), bank.cpu(), index.cpu(), coeffs.cpu())
    buf = torch.full((8, 4, 29), 7.0, device=dev, dtype=dtype)
    for sel in (slice(1, 4), slice(1, 7, 2)):
        buf.fill_(7.0)
        out = buf[sel]
        assert sdsv_kernels.gather_combine(base, bank, index, coeffs, out=out) is out
        _assert_close(buf[sel], ref, base, bank, index, coeffs)
        untouched = torch.ones(8, dtype=torch.bool)
        untouched[sel] = False
        assert (buf[untouched] == 7.0).all()
    tbuf = torch.zeros((3, 29, 4), device=dev, dtype=dtype)
    sdsv_kernels.gather_combine(base, bank, index, coeffs, out=tbuf.transpose(1, 2))
    _assert_close(tbuf.transpose(1, 2), ref, base, bank, index, coeffs)
    x = base.clone()
    assert sdsv_kernels.gather_combine(x, bank, index, coeffs, out=x) is x
    _assert_close(x, ref, base, bank, index, coeffs)


def test_repeated_slots_and_no_terms(any_backend):
    """Every term on one slot adds up its coefficients; A = 0 (with an empty bank) is c0 * base."""
    _, dev = any_backend
    base, bank, _, _ = _inputs(2, (3, 50), 4, 3, torch.float32, dev, seed=4)
    index = torch.full((2, 3), 2, dtype=torch.int64, device=dev)
    coeffs = torch.tensor([[0.5, 1.0, 2.0, -0.25], [1.0, 0.0, 0.0, 0.0]], device=dev)
    got = sdsv_kernels.gather_combine(base, bank, index, coeffs).cpu()
    torch.testing.assert_close(got[0], 0.5 * base[0].cpu() + 2.75 * bank[2].cpu(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], base[1].cpu(), rtol=0, atol=0)
    empty = bank[:0]
    c0 = torch.tensor([[2.0], [-0.5]], device=dev)
    got = sdsv_kernels.gather_combine(base, empty, index[:, :0], c0)
    torch.testing.assert_close(got.cpu(), base.cpu() * c0.cpu().view(2, 1, 1), rtol=0, atol=0)


def test_coeffs_of_another_float_dtype_are_converted(any_backend):
    """The public wrapper converts floating coeffs to the accumulation dtype (the op does not)."""
    _, dev = any_backend
    base, bank, index, coeffs = _inputs(3, (17,), 4, 2, torch.float32, dev, seed=5)
    want = sdsv_kernels.gather_combine(base, bank, index, coeffs)
    torch.testing.assert_close(sdsv_kernels.gather_combine(base, bank, index, coeffs.double()), want, rtol=0, atol=0)
    with pytest.raises(TypeError, match="coeffs must be torch.float32"):
        torch.ops.sdsv.gather_combine(base, bank, index, coeffs.double())


def _extrapolation_case(dev):
    """A bank ring of 3 anchors per sample for 2 samples (slot = 3 b + k), holding residuals
    linear in sigma, ``r(s) = p_b + q_b s``; 5 draft rows (base = hidden state h) at new sigmas,
    each forecasting from its sample's two latest anchors with first-order Taylor coefficients
    (a finite difference in sigma): ``r(s) ~ r_1 + (s - s_1) (r_1 - r_2) / (s_1 - s_2)``."""
    g = torch.Generator().manual_seed(6)
    feat = (4, 23)
    p, q = (torch.randn((2, *feat), generator=g, dtype=torch.float64) for _ in range(2))
    anchor_sigma = torch.tensor([[0.95, 0.9, 0.83], [0.7, 0.61, 0.55]], dtype=torch.float64)
    bank = (p[:, None] + q[:, None] * anchor_sigma.view(2, 3, 1, 1)).reshape(6, *feat)
    sample = torch.tensor([0, 0, 1, 1, 0])
    sigma = torch.tensor([0.8, 0.77, 0.5, 0.31, 0.2], dtype=torch.float64)
    latest, previous = torch.full((5,), 2), torch.full((5,), 1)
    s1, s2 = anchor_sigma[sample, latest], anchor_sigma[sample, previous]
    slope = (sigma - s1) / (s1 - s2)
    coeffs = torch.stack([torch.ones(5, dtype=torch.float64), 1 + slope, -slope], dim=1)
    index = torch.stack([3 * sample + latest, 3 * sample + previous], dim=1)
    h = torch.randn((5, *feat), generator=g, dtype=torch.float64)
    exact = h + p[sample] + q[sample] * sigma.view(5, 1, 1)
    return [x.to(dev) for x in (h, bank, index, coeffs)], exact


def test_order1_extrapolation_is_exact_for_a_linear_residual(any_backend):
    """fp64: first-order coefficients reproduce a residual that is linear in sigma (the forecast
    self-draft's exactness property), to fp64 rounding."""
    _, dev = any_backend
    (h, bank, index, coeffs), exact = _extrapolation_case(dev)
    got = sdsv_kernels.gather_combine(h, bank, index, coeffs)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.cpu(), exact, rtol=0, atol=1e-12)


def test_out_of_range_index_unchecked_on_gpu_gives_a_nan_row(backend):
    """On a GPU the index range is not checked on the host (it would sync): the kernels must not
    read outside the bank and mark the row NaN. Under the interpreter the launcher is driven
    directly (its public path checks CPU indices on the host)."""
    name, dev = backend
    base, bank, index, coeffs = _inputs(3, (5, 41), 4, 2, torch.float32, dev, seed=7)
    index[1, 1] = 4
    index[2, 0] = -1
    if dev == "cuda":
        got = sdsv_kernels.gather_combine(base, bank, index, coeffs)
    elif name == "triton":
        from sdsv_kernels.triton_ops.gather_combine import _launch

        got = _launch(base, bank, index, coeffs, None)
    else:
        pytest.skip("the cpp backend always checks the (host) index")
    nan_rows = got.isnan().flatten(1)
    assert nan_rows[1:].all() and not nan_rows[0].any()


# ---- the argument checks (shared by every backend: reference.check_gather_combine_args) --------

def _set(x, pos, value):
    x = x.clone()
    x[pos] = value
    return x


# what is wrong -> (the change to good arguments, the exception, its message)
ERRORS = {
    "int base": (lambda a: dict(base=a["base"].long()), TypeError, "base must be a floating tensor"),
    "scalar base": (lambda a: dict(base=a["base"][0, 0, 0]), ValueError, r"base must be \[R, \*F\] with R >= 1"),
    "no rows": (lambda a: {k: a[k][:0] for k in ("base", "index", "coeffs")}, ValueError, r"with R >= 1, got shape \(0, 4, 5\)"),
    "bank dtype": (lambda a: dict(bank=a["bank"].half()), TypeError, "bank has dtype torch.float16, base has torch.float32"),
    "bank shape": (lambda a: dict(bank=a["bank"][..., :4]), ValueError, r"bank must be \[S, 4, 5\]"),
    "bank rank": (lambda a: dict(bank=a["bank"].reshape(6, 20)), ValueError, r"bank must be \[S, 4, 5\]"),
    "index int32": (lambda a: dict(index=a["index"].int()), TypeError, "index must be int64"),
    "index rows": (lambda a: dict(index=a["index"][:2]), ValueError, r"index must be \[R=3, A\]"),
    "index rank": (lambda a: dict(index=a["index"][:, 0]), ValueError, r"index must be \[R=3, A\]"),
    "coeffs shape": (lambda a: dict(coeffs=a["coeffs"][:, :2]), ValueError, r"coeffs must be \[R, A\+1\] = \[3, 3\]"),
    "coeffs int": (lambda a: dict(coeffs=a["coeffs"].long()), TypeError, "coeffs must be torch.float32 for torch.float32 data"),
    "index too large": (lambda a: dict(index=_set(a["index"], (2, 1), 6)), ValueError,
                        r"index\[2, 1\] = 6 is out of range for a bank of 6 slots"),
    "index negative": (lambda a: dict(index=_set(a["index"], (1, 0), -1)), ValueError, r"index\[1, 0\] = -1 is out of range"),
    "out dtype": (lambda a: dict(out=a["base"].half()), TypeError, "out has dtype torch.float16"),
    "out shape": (lambda a: dict(out=a["base"].new_empty((3, 20))), ValueError, r"out must have base's shape \(3, 4, 5\)"),
}


@pytest.mark.parametrize("what", ERRORS)
def test_argument_errors(any_backend, what):
    _, dev = any_backend  # on the backend's own device: a GPU backend refuses CPU tensors first
    if what.startswith("index ") and what.endswith(("large", "negative")) and dev != "cpu":
        pytest.skip("a GPU index is not range-checked on the host (see the NaN-row test)")
    base, bank, index, coeffs = _inputs(3, (4, 5), 6, 2, torch.float32, dev, seed=8)
    args = dict(base=base, bank=bank, index=index, coeffs=coeffs, out=None)
    change, exc, match = ERRORS[what]
    args.update(change(args))
    with pytest.raises(exc, match=match):
        sdsv_kernels.gather_combine(**args)


@pytest.mark.parametrize("which", ["bank", "index", "coeffs", "out"])
def test_device_mismatch(which):
    """Checked directly (no second real device here); through the op, a meta tensor mixed with
    CPU ones reaches the fake implementation, which runs the same check."""
    base, bank, index, coeffs = _inputs(3, (4, 5), 6, 2, torch.float32, "cpu")
    args = dict(base=base, bank=bank, index=index, coeffs=coeffs, out=torch.empty_like(base))
    args[which] = args[which].to("meta")
    with pytest.raises(ValueError, match=f"{which} is on meta, base on cpu; all must be on one device"):
        reference.check_gather_combine_args(**args)
    with pytest.raises(ValueError, match="all must be on one device"):
        sdsv_kernels.gather_combine(**args)


# ---- the custom ops ------------------------------------------------------------------------------

def test_opcheck():
    base, bank, index, coeffs = _inputs(3, (4, 7), 5, 2, torch.float32, "cpu", seed=9)
    torch.library.opcheck(torch.ops.sdsv.gather_combine.default, (base, bank, index, coeffs))
    torch.library.opcheck(torch.ops.sdsv.gather_combine.default, (base, bank, index[:, :0], coeffs[:, :1]))
    torch.library.opcheck(torch.ops.sdsv.gather_combine_out.default, (base, bank, index, coeffs, torch.empty_like(base)))


def _forecast_then_step(h, bank, index, coeffs, buf):
    """A draft's forecast, then an in-place multistep-style update into a buffer."""
    y = sdsv_kernels.gather_combine(h, bank, index, coeffs)
    sdsv_kernels.gather_combine(y, bank, index, coeffs, out=buf)
    return y * 2, buf + 1


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    """Both ops trace as opaque nodes (no graph break) and give the eager results."""
    base, bank, index, coeffs = _inputs(3, (4, 7), 5, 2, torch.float32, "cpu", seed=10)
    buf_e, buf_c = torch.empty_like(base), torch.empty_like(base)
    eager = _forecast_then_step(base, bank, index, coeffs, buf_e)
    torch._dynamo.reset()
    compiled = torch.compile(_forecast_then_step, fullgraph=True, backend=compile_backend)(base, bank, index, coeffs, buf_c)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(buf_e, buf_c, rtol=0, atol=0)
