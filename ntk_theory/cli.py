"""The ``ntk-theory`` command line: one subcommand per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import _checks
from .defaults import DEFAULT_INPUTS_DESCRIPTION, default_inputs


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _floats(text: str):
    """'2' -> 2.0, '2,1.5,1' -> [2.0, 1.5, 1.0] (one value per layer)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers; got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


def _widths(text: str):
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or comma-separated integers; got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


def _width_list(text: str) -> list:
    w = _widths(text)
    return w if isinstance(w, list) else [w]


#: the input-file rule, stated in --help (the same rule as the Python API, ntk_theory._checks.INPUT_RULE)
INPUT_HELP = (".npy (a 2-D array (N, d) is N inputs of dimension d; a 1-D array (d,) is one input) or a text file "
              "with one input per line, numbers separated by spaces or commas")


def load_inputs(path: str | None, name: str = "--x") -> np.ndarray:
    """Inputs X (N, d) from a .npy file or a text file (one input per line); default inputs if None.

    The rule (:data:`ntk_theory._checks.INPUT_RULE`): rows are inputs; a 1-D .npy array of shape (d,)
    is one input of dimension d, a text file with one number per line is N inputs of dimension 1."""
    if path is None:
        return default_inputs()
    p = Path(path)
    if not p.exists():
        raise ValueError(f"input file {path} does not exist")
    if p.is_dir():
        raise ValueError(f"input file {path} is a directory")
    try:
        if p.suffix == ".npy":
            X = np.load(p, allow_pickle=False)
        else:
            text = p.read_text()
            X = np.loadtxt(io.StringIO(text.replace(",", " ")), ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read inputs from {path}: {first}") from None
    return _checks.inputs(X, f"inputs in {path}")


def _output_path(path: str, suffixes=(".npz",)) -> Path:
    """The file an output will be written to: ``suffixes[0]`` appended when ``path`` has no suffix,
    a ValueError for another suffix or an unwritable place (checked before any computation)."""
    p = Path(path)
    if p.suffix == "":
        p = p.with_name(p.name + suffixes[0])
    elif p.suffix not in suffixes:
        raise ValueError(f"cannot write {path}: use a file name ending in {' or '.join(suffixes)}")
    _check_writable(p)
    return p


def _check_writable(p: Path) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ValueError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise ValueError(f"cannot write {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"cannot write {p}: permission denied")


def _plot_path(path: str | None) -> Path | None:
    """--plot FILE: writable, and matplotlib importable (checked before any computation)."""
    if path is None:
        return None
    from .validation import require_matplotlib

    p = Path(path)
    if p.suffix == "":
        p = p.with_name(p.name + ".png")
    _check_writable(p)
    require_matplotlib()
    return p


def _progress(args):
    """--quiet: no bars; otherwise bars when standard error is a terminal (None)."""
    return False if getattr(args, "quiet", False) else None


def _add_network_options(p: argparse.ArgumentParser, *, width: bool = True) -> None:
    p.add_argument("activation", nargs="?", default="relu", help="activation name (default: relu)")
    p.add_argument("--depth", type=int, default=3, help="number of hidden layers L (default: 3)")
    if width:
        p.add_argument("--width", type=_widths, default=256, help="hidden width n, or n1,n2,... (default: 256)")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=2.0, help="weight variance C_W, or one per layer (default: 2)")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="bias variance C_b, or one per layer (default: 0)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk", help="NTK parameterization (default: ntk)")
    p.add_argument("--x", dest="x", default=None, help=f"inputs: {INPUT_HELP}; default: {DEFAULT_INPUTS_DESCRIPTION}")


def _cmd_sample(args) -> int:
    from .montecarlo import sample_statistics

    out = _output_path(args.out, (".npz", ".json")) if args.out else None
    X = load_inputs(args.x)
    result = sample_statistics(
        X,
        args.activation,
        depth=args.depth,
        width=args.width,
        C_W=args.C_W,
        C_b=args.C_b,
        param=args.param,
        samples=args.samples,
        seed=args.seed,
        batches=args.batches,
        sampler=args.sampler,
        workers=args.workers,
        progress=_progress(args),
    )
    print(result.table(max_rows=args.max_rows))
    if out:
        path = result.save(out)
        print(f"saved to {path}")
    return 0


def _cmd_derive(args) -> int:
    from .activations import activation
    from .gaussian.derivation import latex_display, plain_text
    from .gaussian.display import display_text
    from .recursions import KernelRecursion

    act = activation(args.activation)
    if args.finite_width:
        return _derive_finite_width(act, args)
    rec = KernelRecursion(act, args.depth, param=args.param, widths=1 if args.param == "standard" else None)
    kern = rec.kernels[0]
    if args.latex:
        print(f"% activation {act.name}")
        print(latex_display(act.latex()))
        for title, e in (("kernel T = E[s(u) s(v)]", kern.T), ("derivative kernel Tdot = E[s'(u) s'(v)]", kern.Tdot),
                         ("E[s(u)^2]", kern.T_diag), ("E[s'(u)^2]", kern.Tdot_diag)):
            print(f"% {title}")
            print(latex_display(e.latex()))
        print("% layer map (K, Theta) -> (K', Theta'), off the diagonal (ab) and on it")
        print(latex_display(rec.layer_maps()[0].latex()))
        _derive_iterates(kern, args, latex=True)
        return 0
    print(f"activation {act.name}: s(x) = {plain_text(act.expr)}    [{act.source}]")
    for title, e in (("kernel T = E[s(u) s(v)]", kern.T), ("derivative kernel Tdot = E[s'(u) s'(v)]", kern.Tdot)):
        print(f"\n{title}, (u, v) ~ N(0, [[k11, k12], [k12, k22]]):")
        if e.is_closed_form:
            print(f"  = {display_text(e.expr, plain_text)}\n  {e.source}; derivation:")
            print("\n".join("    " + line for line in e.derivation.text(max_depth=args.steps).splitlines()))
        else:
            print(f"  no closed form: {e.source}\n  ({e.reason})")
    for title, e in (("E[s(u)^2], u ~ N(0, k)", kern.T_diag), ("E[s'(u)^2]", kern.Tdot_diag)):
        print(f"\n{title}:")
        print(f"  = {display_text(e.expr, plain_text)}    [{e.source}]" if e.is_closed_form else f"  {e.source}")
        if getattr(e, "message", None):
            print(f"  ({e.message})")
    print("\nlayer map (K, Theta) -> (K', Theta'), off the diagonal (ab) and on it:")
    for name, expr in rec.layer_maps()[0].symbolic().items():
        print(f"  {name} = {display_text(expr, plain_text)}")
    _derive_iterates(kern, args, latex=False)
    return 0


def _derive_iterates(kern, args, latex: bool) -> None:
    """The one-input recursion K(l), Theta(l), l = 1 .. depth + 1, iterated symbolically in G0 = x.x/n0
    (the diagonal layer map applied ``depth`` times); constants as symbols unless --C-W/--C-b are given."""
    import sympy as sp

    from .gaussian import k as k_sym
    from .gaussian.derivation import latex_display, plain_text
    from .recursions.layer import C_W, C_b, lambda_W, lambda_b

    L = args.depth
    title = (f"layers 1 .. {L + 1} for one input, G0 = x.x / n0 (layer {L + 1} = output; "
             f"lambda_b, lambda_W of param {args.param})")
    if not (kern.T_diag.is_closed_form and kern.Tdot_diag.is_closed_form):
        print(f"% {title}: no closed form for E[s^2] or E[s'^2]" if latex else
              "\n(no closed form for E[s(u)^2] or E[s'(u)^2]: iterate numerically with `ntk-theory kernel`)")
        return
    cw = C_W if args.C_W is None else sp.nsimplify(args.C_W)
    cb = C_b if args.C_b is None else sp.nsimplify(args.C_b)
    subs = {}
    if args.C_W is not None and args.C_b is not None and args.param != "standard":
        from .conventions import learning_rate_factors

        lb_, lw_ = learning_rate_factors(args.param, args.C_W, args.C_b, 1)
        subs = {lambda_b: sp.nsimplify(lb_), lambda_W: sp.nsimplify(lw_)}
    lb, lw = subs.get(lambda_b, lambda_b), subs.get(lambda_W, lambda_W)
    G0 = sp.Symbol("G_0", positive=True)
    K, Th = cb + cw * G0, lb + lw * G0
    rows = [(K, Th)]
    for _ in range(L):
        T = kern.T_diag.expr.subs(k_sym, K)
        Td = kern.Tdot_diag.expr.subs(k_sym, K)
        K, Th = sp.simplify(cb + cw * T), sp.simplify(lb + lw * T + cw * Td * Th)
        rows.append((K, Th))
    if latex:
        print(f"% {title}")
        for l, (K, Th) in enumerate(rows, start=1):
            print(latex_display(rf"K^{{({l})}} = {sp.latex(K)},\quad \Theta^{{({l})}} = {sp.latex(Th)}"))
        return
    print(f"\n{title}:")
    for l, (K, Th) in enumerate(rows, start=1):
        print(f"  layer {l}: K = {plain_text(K)}, Theta = {plain_text(Th)}")


def _derive_finite_width(act, args) -> int:
    import sympy as sp

    from .finite_width import FiniteWidthRecursion
    from .finite_width.moments import AVERAGES
    from .gaussian.derivation import latex_display, plain_text

    C_W = args.C_W if args.C_W is not None else 1.0
    C_b = args.C_b if args.C_b is not None else 0.0
    rec = FiniteWidthRecursion(act, args.depth, C_W, C_b, args.param)
    if args.latex:
        print(f"% activation {act.name}")
        print(latex_display(act.latex()))
        print("% one-input Gaussian averages, z ~ N(0, K)")
        for name, avg in rec.averages.averages.items():
            label = AVERAGES[name][1]
            value = sp.latex(avg.expr) if avg.is_closed_form else r"\text{quadrature}"
            print(latex_display(rf"\langle {label} \rangle = {value}"))
        print(f"% finite-width layer map (C_W = {rec.C_W[1]:g}, C_b = {rec.C_b[1]:g}, param {args.param})")
        names = {"Th": r"\Theta", "Th1": r"\Theta_1", "K1": "K_1"}
        for name, expr in rec.layer_map().values().items():
            print(latex_display(f"{names.get(name, name)}' = {sp.latex(expr)}"))
        if rec.averages.closed_form:
            print(f"% layers 1 .. {args.depth + 1} for one input with G_0 = x.x / n_0")
            for l, st in enumerate(rec.symbolic(), start=1):
                print(latex_display(r",\quad ".join(f"{names.get(n, n)}^{{({l})}} = {sp.latex(v)}"
                                                      for n, v in st.values().items())))
        return 0
    print(f"activation {act.name}: s(x) = {plain_text(act.expr)}    [{act.source}]")
    print("\none-input Gaussian averages, z ~ N(0, K):")
    for name, avg in rec.averages.averages.items():
        label = plain_text(sp.Symbol(AVERAGES[name][1]))
        print(f"  <{label}> = {plain_text(avg.expr) if avg.is_closed_form else 'quadrature'}    [{avg.source}]")
    print(f"\nfinite-width layer map (C_W = {rec.C_W[1]:g}, C_b = {rec.C_b[1]:g}, param {args.param}; "
          "PDLT ch. 4, 8; ntk_theory/finite_width/single.py):")
    for name, expr in rec.layer_map().values().items():
        print(f"  {name}' = {plain_text(expr)}")
    if rec.averages.closed_form:
        print(f"\nlayers 1 .. {args.depth + 1} for one input with G0 = x.x / n0 (layer {args.depth + 1} = output):")
        for l, st in enumerate(rec.symbolic(), start=1):
            print(f"  layer {l}: " + ", ".join(f"{n} = {plain_text(v)}" for n, v in st.values().items()))
    else:
        print("\n(no closed form for every average: iterate numerically with `ntk-theory finite-width`)")
    return 0


def _cmd_finite_width(args) -> int:
    import time

    from .finite_width import finite_width

    out = _output_path(args.out)
    X = load_inputs(args.x)
    t0 = time.perf_counter()
    pred = finite_width(args.activation, X, args.depth, args.C_W, args.C_b, args.param,
                        widths=args.width if isinstance(args.width, list) else None, progress=_progress(args))
    seconds = time.perf_counter() - t0
    pred.save(out)
    print(pred)
    print(f"written to {out} in {seconds:.2f} s: " + ", ".join(pred.arrays()))
    if args.width is not None and not isinstance(args.width, list):
        at = pred.at_width(args.width)
        print(f"at width {args.width}: E[f f] =\n{at['output_second_moment']}\nE[Theta] =\n{at['ntk_mean']}")
    return 0


def _cmd_kernel(args) -> int:
    import time

    from .codegen import CompiledKernel

    out = _output_path(args.out)
    X1 = load_inputs(args.x1, "--x1")
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2")
    kern = CompiledKernel(args.activation, args.depth, args.C_W, args.C_b, args.param, widths=args.widths)
    kern.module  # load or compile first: reported apart from the evaluation
    t0 = time.perf_counter()
    res = kern(X1, X2, dtype=np.float32 if args.float32 else np.float64, progress=_progress(args))
    seconds = time.perf_counter() - t0
    err = res.info.get("quadrature_error")
    rec = kern.recursion
    info = {"activation": [k.activation.name for k in rec.kernels], "depth": rec.depth, "C_W": list(rec.C_W),
            "C_b": list(rec.C_b), "param": rec.param, "widths": None if rec.widths is None else list(rec.widths),
            "dtype": "float32" if args.float32 else "float64", "quadrature_error": float(err or 0.0),
            "x2_given": X2 is not None}
    arrays = {"X1": X1} if X2 is None else {"X1": X1, "X2": X2}
    np.savez(out, nngp=res.nngp, ntk=res.ntk, info=np.array(json.dumps(info)), **arrays)
    start = ("compiled code loaded from Numba's disk cache" if kern.from_cache
             else "compiling (not all was in Numba's disk cache)")
    print(f"{kern.recursion}: nngp and ntk of shape {res.nngp.shape} written to {out}")
    print(f"  {seconds + kern.compile_seconds:.3f} s: {start} {kern.compile_seconds:.2f} s, "
          f"evaluation {seconds:.3f} s"
          + (f"; quadrature error estimate {err:.1e}" if err else ""))
    if args.show_source:
        print(kern.source)
    return 0


def _cmd_check(args) -> int:
    from .validation import check, check_finite_width

    plot = _plot_path(args.plot)
    X = load_inputs(args.x)
    if args.finite_width:
        report = check_finite_width(args.activation, X, args.depth, args.C_W, args.C_b, args.param,
                                    widths=args.widths or [32, 64, 128, 256], samples=args.samples, seed=args.seed,
                                    progress=_progress(args))
    else:
        report = check(args.activation, X, args.depth, args.C_W, args.C_b, args.param,
                       widths=args.widths or [64, 128, 256, 512], samples=args.samples, seed=args.seed,
                       progress=_progress(args), mp_check=args.mp_check)
    print(report.table())
    if plot:
        report.plot(plot)
        print(f"plot written to {plot}")
    return 0 if report.passed else 1


def _cmd_empirical_ntk(args) -> int:
    import time

    from . import MLP
    from .empirical import empirical_ntk, plan

    out = _output_path(args.out)
    X1 = load_inputs(args.x)
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2")
    depth = _checks.positive_int("depth", args.depth)
    hidden = list(args.width) if isinstance(args.width, list) else [args.width] * depth
    if len(hidden) != depth:
        raise ValueError(f"--width has {len(hidden)} entries but --depth is {depth}")
    net = MLP.random((X1.shape[1], *hidden, args.outputs), args.activation, C_W=args.C_W, C_b=args.C_b,
                     param=args.param, seed=args.seed)
    dtype = np.float32 if args.float32 else np.float64
    est = plan(net, X1.shape[0], None if X2 is None else X2.shape[0], args.method, not args.no_trace,
               args.batch_size, dtype)
    t0 = time.perf_counter()
    ntk = empirical_ntk(net, X1, X2, method=est.method, trace_outputs=not args.no_trace,
                        batch_size=args.batch_size, dtype=dtype)
    seconds = time.perf_counter() - t0
    info = {"activation": args.activation, "depth": depth, "widths": list(net.spec.widths), "C_W": list(net.spec.C_W),
            "C_b": list(net.spec.C_b), "param": net.spec.param, "seed": args.seed, "method": est.method,
            "trace_outputs": not args.no_trace, "dtype": np.dtype(dtype).name}
    np.savez(out, ntk=ntk, info=np.array(json.dumps(info)))
    print(f"{net}: empirical NTK of shape {ntk.shape} by {est.method} (blocks of {est.block} inputs, "
          f"predicted {est.flops:.3g} FLOPs, {est.seconds:.3g} s) in {seconds:.3f} s, written to {out}")
    return 0


def _cmd_empirical_cost(args) -> int:
    from .architecture import MLPSpec
    from .empirical import Problem, cost_table

    spec = MLPSpec.build(args.input_dim, args.depth, args.width, args.outputs)
    p = Problem.of(spec, args.n, args.n2, not args.no_trace, np.float32 if args.float32 else np.float64)
    print(cost_table(p, args.batch_size, args.memory * 2**30))
    return 0


def _cmd_criticality(args) -> int:
    from .criticality import at, criticality, fixed_points, phase_diagram

    plot = _plot_path(args.plot)
    if (args.C_b is None) != (args.C_W is None):
        raise ValueError("give both --C-b and --C-W to analyse one initialisation")
    res = criticality(args.activation, dps=args.dps)
    print(res.text())
    if args.C_b is not None:
        print(f"\nfixed points of K' = C_b + C_W <s^2>_K at C_b = {args.C_b:g}, C_W = {args.C_W:g}:")
        try:
            points = fixed_points(args.activation, args.C_b, args.C_W)
        except ValueError as exc:  # a line of fixed points (scale-invariant criticality)
            print(f"  {exc}")
            points = [at(args.activation, 1.0, args.C_b, args.C_W)]
        for fp in points or []:
            print("  " + repr(fp))
        if not points:
            print("  none in K = 1e-4 .. 1e4 (K grows or decays without bound)")
    if plot:
        phase_diagram(args.activation).plot(plot)
        print(f"phase diagram written to {plot}")
    return 0


def _cmd_dynamics(args) -> int:
    from .dynamics.widths import width_scaling

    res = width_scaling(args.widths, seeds=args.seeds, depth=args.depth, activation=args.activation,
                        C_W=args.C_W, C_b=args.C_b, param=args.param, seed=args.seed)
    print(f"full-batch GD vs the infinite-width NTK prediction ({res.config})")
    print(res.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ntk-theory",
        description="Exact kernels of wide neural networks, and the finite networks that check them.",
        epilog=f"Inputs (--x, --x1, --x2): {INPUT_HELP}.  Errors are printed as one line; --debug shows the "
               "traceback.  Progress bars appear on a terminal only (--quiet: none).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ntk-theory {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print the traceback")

    p = sub.add_parser(
        "sample", parents=[common],
        help="Monte Carlo over finite networks: E[f f], NTK mean/covariance, last-layer kernel, 4th cumulant",
        description="Draw independent finite networks and print moment estimates with standard errors.",
    )
    _add_network_options(p)
    p.add_argument("--samples", type=int, default=20_000, help="number of networks (default: 20000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--batches", type=int, default=32, help="batches for standard errors (default: 32)")
    p.add_argument("--sampler", choices=("projected", "dense"), default="projected",
                   help="'projected' draws weights only along used directions (exact, fast); 'dense' full matrices")
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--out", default=None, help="save estimates to .npz or .json (no suffix: .npz)")
    p.add_argument("--max-rows", type=int, default=12, help="distinct entries printed per estimate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("derive", parents=[common], help="derive and print the kernel maps of an activation and how they were obtained")
    p.add_argument("activation", nargs="?", default="relu", help="library name or expression in x (default: relu)")
    p.add_argument("--depth", type=int, default=1,
                   help="number of hidden layers; the one-input iterates K(l), Theta(l) are printed up to the output "
                        "(default: 1)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk")
    p.add_argument("--latex", action="store_true",
                   help="print LaTeX, one display formula per line in $$ ... $$, headings as %% comments")
    p.add_argument("--steps", type=int, default=4, help="depth of the derivation tree printed (default: 4)")
    p.add_argument("--finite-width", action="store_true",
                   help="print the 1/n layer maps (V, K1, A, B, D, F, Theta1) and, for closed forms, their iterates")
    p.add_argument("--C-W", dest="C_W", type=float, default=None,
                   help="C_W (default: the symbol C_W; with --finite-width: 1)")
    p.add_argument("--C-b", dest="C_b", type=float, default=None,
                   help="C_b (default: the symbol C_b; with --finite-width: 0)")
    p.set_defaults(func=_cmd_derive)

    p = sub.add_parser("kernel", parents=[common], help="infinite-width NNGP and NTK of the output, written to .npz")
    p.add_argument("activation", help="library name or expression in x")
    p.add_argument("--depth", type=int, required=True, help="number of hidden layers L")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=1.0, help="C_W, or one per layer (default: 1)")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="C_b, or one per layer (default: 0)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk")
    p.add_argument("--widths", type=_widths, default=None, help="hidden widths (param=standard only)")
    p.add_argument("--x1", required=True, help=f"inputs X1 (N1, d): {INPUT_HELP}")
    p.add_argument("--x2", default=None, help="inputs X2 (N2, d) (default: X1)")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added) with arrays nngp and ntk (N1, N2), "
                   "X1 (and X2) and info (JSON: activation, depth, C_W, C_b, param, widths, dtype, quadrature_error)")
    p.add_argument("--float32", action="store_true", help="store the result in float32 (arithmetic stays float64)")
    p.add_argument("--show-source", action="store_true", help="print the generated Numba code")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_kernel)

    p = sub.add_parser("finite-width", parents=[common], help="finite-width 1/n predictions (PDLT) at inputs X, written to .npz")
    p.add_argument("activation", help="library name or expression in x")
    p.add_argument("--depth", type=int, required=True, help="number of hidden layers L")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=1.0, help="C_W, or one per layer (default: 1)")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="C_b, or one per layer (default: 0)")
    p.add_argument("--param", choices=("ntk", "unit"), default="ntk")
    p.add_argument("--x", required=True, help=f"inputs X (N, d): {INPUT_HELP}")
    p.add_argument("--width", type=_widths, default=None,
                   help="print the corrected values at this width (n1,n2,...: unequal hidden widths)")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added): nngp, ntk, nngp_correction, "
                   "ntk_correction, ntk_covariance, output_cumulant, ntk_output_covariance, V, A, B, D, F, description")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finite_width)

    p = sub.add_parser("check", parents=[common], help="derive, evaluate and compare with Monte Carlo over finite networks (the main job)")
    _add_network_options(p, width=False)
    p.add_argument("--widths", type=_width_list, default=None,
                   help="finite widths to sample (default: 64,128,256,512; with --finite-width 32,64,128,256)")
    p.add_argument("--samples", type=int, default=20_000, help="networks per width (default: 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finite-width", action="store_true",
                   help="check the 1/n predictions (K1, Theta1, V, A, B, D, F) against Monte Carlo fits over the widths")
    p.add_argument("--mp-check", action="store_true",
                   help="also compare float64 with the recursion in 30-digit mpmath (slow without closed forms: "
                        "tens of seconds per entry for tanh); the default cross-check is an independent float64 quadrature")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw each compared entry's Monte Carlo estimates against 1/n with error bars, the fit and "
                        "the prediction (needs matplotlib: pip install 'ntk-theory[plot]')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check)

    methods = ("auto", "jacobian_contraction", "ntk_vector_products", "structured")
    p = sub.add_parser("empirical-ntk", parents=[common], help="empirical NTK of a random finite network (Novak et al. 2022 methods), to .npz",
                       description="Draw a random MLP and write its empirical NTK J Lambda J^T at the inputs.")
    _add_network_options(p)
    p.add_argument("--outputs", type=int, default=1, help="output dimension O (default: 1)")
    p.add_argument("--x2", default=None, help="inputs X2 (N2, d) (default: X)")
    p.add_argument("--method", default="auto", help=f"one of {', '.join(methods)} (default: auto, by the cost model)")
    p.add_argument("--no-trace", action="store_true", help="full (N1, N2, O, O) kernel instead of the mean over outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random network (default: 0)")
    p.add_argument("--batch-size", type=int, default=None, help="inputs per block (default: from a 2 GiB memory budget)")
    p.add_argument("--float32", action="store_true", help="compute and store in float32")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added) with the array ntk and info (JSON)")
    p.set_defaults(func=_cmd_empirical_ntk)

    p = sub.add_parser("empirical-cost", parents=[common], help="FLOPs and memory of each empirical-NTK method, and the one auto picks")
    p.add_argument("--n", type=int, required=True, help="number of inputs N1")
    p.add_argument("--n2", type=int, default=None, help="number of inputs N2 (default: X2 = X1, symmetric)")
    p.add_argument("--outputs", type=int, default=1, help="output dimension O (default: 1)")
    p.add_argument("--depth", type=int, default=3, help="hidden layers L (default: 3)")
    p.add_argument("--width", type=_widths, default=512, help="hidden width n, or n1,n2,... (default: 512)")
    p.add_argument("--input-dim", type=int, default=32, help="input dimension n_0 (default: 32)")
    p.add_argument("--no-trace", action="store_true", help="full (N1, N2, O, O) kernel")
    p.add_argument("--float32", action="store_true", help="4-byte floats")
    p.add_argument("--batch-size", type=int, default=None, help="inputs per block (default: from the memory budget)")
    p.add_argument("--memory", type=float, default=2.0, help="memory budget for intermediates in GiB (default: 2)")
    p.set_defaults(func=_cmd_empirical_cost)

    p = sub.add_parser("criticality", parents=[common], help="universality class, critical (C_b, C_W), fixed points, chi's, depth scales",
                       description="Criticality of an activation: exact where its class gives it, else mpmath.")
    p.add_argument("activation", help="library name or expression in x (continuous)")
    p.add_argument("--dps", type=int, default=30, help="digits for the critical point (default: 30)")
    p.add_argument("--C-b", dest="C_b", type=float, default=None, help="also analyse this C_b (with --C-W)")
    p.add_argument("--C-W", dest="C_W", type=float, default=None, help="also analyse this C_W (with --C-b)")
    p.add_argument("--plot", default=None, help="write the order/chaos phase diagram to this PNG (needs matplotlib)")
    p.set_defaults(func=_cmd_criticality)

    p = sub.add_parser("dynamics", parents=[common], help="train finite networks by GD and compare with the infinite-width NTK prediction",
                       description="Deviation from the NTK prediction and NTK change vs width, with power-law fits.")
    p.add_argument("activation", nargs="?", default="relu", help="activation name (default: relu)")
    p.add_argument("--depth", type=int, default=1, help="hidden layers (default: 1)")
    p.add_argument("--widths", type=_width_list, default=[64, 256, 1024, 4096],
                   help="widths (default: 64,256,1024,4096)")
    p.add_argument("--seeds", type=int, default=8, help="networks per width (default: 8)")
    p.add_argument("--C-W", dest="C_W", type=float, default=2.0, help="C_W (default: 2)")
    p.add_argument("--C-b", dest="C_b", type=float, default=0.1, help="C_b (default: 0.1)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_dynamics)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv=None) -> int:
    """Run one command; every error is one line on standard error (exit 2), with --debug the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"ntk-theory {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, ArithmeticError, ImportError, OSError) as exc:  # bad input, overflow, missing extra, files
        if args.debug:
            raise
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, the traceback with --debug
        if args.debug:
            raise
        print(f"{prog}: internal error ({type(exc).__name__}): {_one_line(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
