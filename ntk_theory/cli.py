"""The ``ntk-theory`` command line: one subcommand per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import ast
import copy
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


def _comma_separated(text: str, convert, expected: str):
    """``convert`` of each comma-separated part: one value, or a list (one value per layer); an argparse
    error saying what was ``expected`` when a part does not convert."""
    try:
        parts = [convert(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
    return parts[0] if len(parts) == 1 else parts


def _floats(text: str):
    """'2' -> 2.0, '2,1.5,1' -> [2.0, 1.5, 1.0] (one value per layer)."""
    return _comma_separated(text, float, "a number or comma-separated numbers")


def _widths(text: str):
    """'64' -> 64, '64,128' -> [64, 128]."""
    return _comma_separated(text, int, "an integer or comma-separated integers")


def _width_list(text: str) -> list:
    w = _widths(text)
    return w if isinstance(w, list) else [w]


#: the input-file rule, stated in --help (the same rule as the Python API, ntk_theory._checks.INPUT_RULE)
INPUT_HELP = (".npy (a 2-D array (N, d) is N inputs of dimension d; a 1-D array (d,) is one input) or a text file "
              "with one input per line, numbers separated by spaces or commas")


def load_inputs(path: str | None, name: str = "--x", spatial: bool = False) -> np.ndarray:
    """Inputs X (N, d) from a .npy file or a text file (one input per line); default inputs if None.

    The rule (:data:`ntk_theory._checks.INPUT_RULE`): rows are inputs; a 1-D .npy array of shape (d,)
    is one input of dimension d, a text file with one number per line is N inputs of dimension 1.
    ``spatial``: a .npy array (N, W, C) or (N, H, W, C) is also accepted (inputs of convolutional networks)."""
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
    if spatial and np.ndim(X) > 2:
        from .reference.graph import inputs

        return inputs(X, f"inputs in {path}")
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


#: The defaults of each command's options: those of the Python function the command calls (a test compares them
#: with the functions' signatures).  Network options default to None in the parser, so that --arch can tell
#: which were given; these values are filled in when no --arch is given.
DEFAULTS = {
    "sample": dict(activation="relu", depth=3, width=256, C_W=2.0, C_b=0.0, param="ntk"),  # montecarlo.sample_statistics
    "check": dict(activation="relu", depth=3, C_W=2.0, C_b=0.0, param="ntk"),  # validation.check, check_finite_width
    "kernel": dict(C_W=1.0, C_b=0.0, param="ntk"),  # codegen.CompiledKernel
    "finite-width": dict(C_W=1.0, C_b=0.0, param="ntk"),  # finite_width.finite_width
    "empirical-ntk": dict(activation="relu", depth=3, width=256, C_W=1.0, C_b=0.0, param="ntk", outputs=1),  # MLP.random
    "derive": dict(activation="relu", depth=1, param="ntk"),  # C_W, C_b: symbols unless given
}

#: option dest -> how it is written on the command line
_FLAGS = {"activation": "ACTIVATION", "depth": "--depth", "width": "--width", "widths": "--widths", "C_W": "--C-W",
          "C_b": "--C-b", "param": "--param", "outputs": "--outputs"}


def _default(command: str, name: str, unit: str = "") -> str:
    return f"(default: {DEFAULTS[command][name]}{unit})"


def _add_network_options(p: argparse.ArgumentParser, command: str, *, width: bool = True) -> None:
    d = DEFAULTS[command]
    p.add_argument("activation", nargs="?", default=None, help=f"activation name or expression in x {_default(command, 'activation')}")
    p.add_argument("--depth", type=int, default=None, help=f"number of hidden layers L (default: {d['depth']})")
    if width:
        p.add_argument("--width", type=_widths, default=None, help=f"hidden width n, or n1,n2,... (default: {d['width']})")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=None,
                   help=f"weight variance C_W, or one per layer (default: {d['C_W']:g})")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=None,
                   help=f"bias variance C_b, or one per layer (default: {d['C_b']:g})")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default=None,
                   help=f"NTK parameterization (default: {d['param']})")
    p.add_argument("--x", dest="x", default=None, help=f"inputs: {INPUT_HELP}; default: {DEFAULT_INPUTS_DESCRIPTION}")
    _add_arch(p, command, ["activation", "depth", "width", "C_W", "C_b", "param"] if width else
              ["activation", "depth", "C_W", "C_b", "param"])


def _add_mlp_options(p: argparse.ArgumentParser, params: tuple) -> None:
    """ACTIVATION, --depth, --C-W, --C-b and --param (one of ``params``) of a command that has no default
    network (its MLP is given by these or by --arch)."""
    p.add_argument("activation", nargs="?", default=None, help="library name or expression in x (or --arch)")
    p.add_argument("--depth", type=int, default=None, help="number of hidden layers L (or --arch)")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=None, help="C_W, or one per layer (default: 1)")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=None, help="C_b, or one per layer (default: 0)")
    p.add_argument("--param", choices=params, default=None, help="(default: ntk)")


ARCH_HELP = ("the network in neural-tangents' stax syntax, e.g. \"stax.serial(stax.Dense(512, W_std=1.5), stax.Relu(), "
             "stax.Dense(1))\" (read with ast, never evaluated: layer calls with literal arguments only), or FILE.py: "
             "its top-level `network = ...` is read the same way (the file is parsed, never run; it may use names "
             "assigned before, and imports are skipped).  Replaces ACTIVATION, --depth, --width, --C-W, --C-b, --param")


def _add_arch(p: argparse.ArgumentParser, command: str, network_options: list, required=("activation", "depth")) -> None:
    """--arch, and what the command needs to resolve its network options (see :func:`_resolve_network`)."""
    p.add_argument("--arch", default=None, metavar="STAX|FILE.py", help=ARCH_HELP)
    p.set_defaults(network_options=tuple(network_options), network_defaults=DEFAULTS.get(command, {}),
                   network_required=tuple(r for r in required if r not in DEFAULTS.get(command, {})), parser=p)


def _resolve_network(args) -> None:
    """``args.network``: the stax Network of --arch (None without it); with --arch no network option may be
    given, without it the missing options take the command's defaults (:data:`DEFAULTS`)."""
    options = getattr(args, "network_options", ())
    args.network = None
    if getattr(args, "arch", None) is not None:
        given = [_FLAGS.get(o, o) for o in options if getattr(args, o, None) is not None]
        if given:
            raise ValueError(f"--arch describes the whole network; drop {', '.join(given)}")
        args.network = load_architecture(args.arch)
        return
    for name, value in getattr(args, "network_defaults", {}).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    missing = [_FLAGS.get(o, o) for o in getattr(args, "network_required", ()) if getattr(args, o, None) is None]
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)} (or --arch)")


def load_architecture(text: str):
    """The stax Network of an --arch value: stax text, or a .py file whose ``network = ...`` is read
    (:func:`architecture_from_file`)."""
    from . import stax

    text = text.strip()
    if text.endswith(".py") and "(" not in text:
        return architecture_from_file(text)
    return stax.parse(text)


class _Substitute(ast.NodeTransformer):
    """Names assigned earlier in the file, replaced by their (already substituted) expressions."""

    def __init__(self, env: dict):
        self.env = env

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.env:
            return copy.deepcopy(self.env[node.id])
        return node


def architecture_from_file(path: str):
    """The network of a Python file, read without running it: top-level ``NAME = expression`` assignments
    are collected in order (each may use names assigned before), imports, docstrings and an
    ``if __name__ == "__main__":`` block are skipped, anything else is an error naming its line; the
    expression assigned to ``network`` last is read by :func:`ntk_theory.stax.parse`."""
    from . import stax

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--arch {path}: no such file")
    try:
        tree = ast.parse(p.read_text(), filename=str(p))
    except SyntaxError as exc:
        raise ValueError(f"--arch {path}, line {exc.lineno}: not valid Python syntax: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--arch {path}: cannot read it: {exc}") from None
    env: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) or _is_docstring(stmt) or _is_main_block(stmt):
            continue
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else None)
        if targets is None:
            raise ValueError(f"--arch {path}, line {stmt.lineno}: only imports and NAME = ... assignments are read "
                             "(the file is parsed, never run)")
        value = _Substitute(env).visit(copy.deepcopy(stmt.value))
        for t in targets:
            if isinstance(t, ast.Name):
                env[t.id] = value
            elif "network" in {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}:
                raise ValueError(f"--arch {path}, line {stmt.lineno}: assign the network on its own: network = ...")
    if "network" not in env:
        raise ValueError(f"--arch {path}: no top-level assignment network = stax.serial(...)")
    return stax.parse(ast.unparse(env["network"]))


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_main_block(stmt) -> bool:
    return isinstance(stmt, ast.If) and "__main__" in ast.unparse(stmt.test) and "__name__" in ast.unparse(stmt.test)


class NotSupportedForArchitecture(ValueError):
    """A command that does not (yet) interpret the given description."""


#: command -> runner(args) -> exit code, for --arch descriptions that are not plain MLPs.  The Monte Carlo and
#: finite-width interpretations of general descriptions register here; a command without an entry refuses such
#: descriptions with "not yet supported for this architecture: <why it is not a plain MLP>".
GENERAL_ARCHITECTURE_RUNNERS: dict = {}


def _mlp_from_arch(args, command: str) -> bool:
    """For --arch on a command that runs MLPs: fill the MLP options from a plain-MLP description and return
    True; return False if a general runner is registered; else raise NotSupportedForArchitecture."""
    from .architecture.mlp import as_mlp, why_not_mlp

    params = as_mlp(args.network)
    if params is None:
        if command in GENERAL_ARCHITECTURE_RUNNERS:
            return False
        raise NotSupportedForArchitecture(f"not yet supported for this architecture: {why_not_mlp(args.network)}")
    args.activation, args.depth, args.param = params.activation, params.depth, params.param
    args.C_W, args.C_b = list(params.C_W), list(params.C_b)
    hidden = list(params.hidden_widths)
    args.width = hidden[0] if len(set(hidden)) == 1 else hidden
    if command == "empirical-ntk":
        args.outputs = params.output_dim
    elif params.output_dim != 1:
        print(f"(the readout has {params.output_dim} outputs, which are identically distributed: the statistics "
              "of one output)")
    return True


def _cmd_sample(args) -> int:
    from .montecarlo import sample_statistics

    if args.network is not None and not _mlp_from_arch(args, "sample"):
        return GENERAL_ARCHITECTURE_RUNNERS["sample"](args)
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


def _sample_architecture(args) -> int:
    """sample --arch for a description that is not a plain MLP: :func:`ntk_theory.montecarlo.sample_kernels` of the
    description as given (its own widths); --out writes E[f f] (Rao-Blackwellised over a Dense readout) as
    output_second_moment and E[Theta] as ntk_mean, each with NAME_stderr, X and info."""
    from .montecarlo import sample_kernels

    out = _output_path(args.out, (".npz", ".json")) if args.out else None
    X = load_inputs(args.x, spatial=True)  # (N, d), or images for convolutional descriptions
    result = sample_kernels(args.network, X, args.samples, args.seed, batches=args.batches, sampler=args.sampler,
                            workers=args.workers, progress=_progress(args))
    print(result.table(max_rows=args.max_rows))
    if out:
        arrays = {"X": X}
        for name, est in (("output_second_moment", result["nngp"]), ("ntk_mean", result["ntk"])):
            arrays[name], arrays[name + "_stderr"] = est.value, est.stderr
        info = dict(result.info, output_second_moment=result["nngp"].description)
        if out.suffix == ".json":
            out.write_text(json.dumps({"info": info, **{k: v.tolist() for k, v in arrays.items()}}, indent=1))
        else:
            save_npz(out, "sample", **arrays, info=np.array(json.dumps(info)))
        print(f"saved to {out}")
    return 0


def _check_architecture(args) -> int:
    """check --arch for a description that is not a plain MLP: :func:`ntk_theory.validation.check_architecture`
    (widths default to its own); a layer without a kernel rule is refused in one line naming it."""
    from .validation import check_architecture

    plot = _plot_path(args.plot)
    if args.finite_width:
        return _check_residual_finite_width(args, plot)
    X = load_inputs(args.x, spatial=True)  # (N, d), or images for convolutional descriptions
    try:
        report = check_architecture(args.network, X, **({"widths": args.widths} if args.widths else {}),
                                    samples=args.samples, seed=args.seed, progress=_progress(args),
                                    mp_check=args.mp_check)
    except NotImplementedError as exc:
        raise NotSupportedForArchitecture(f"not supported for this architecture: {exc}") from None
    return _print_report(report, plot)


def _print_report(report, plot) -> int:
    """Print a check's table, draw its plot if asked; exit code 0 when every row passes, else 1."""
    print(report.table())
    if plot:
        report.plot(plot)
        print(f"plot written to {plot}")
    return 0 if report.passed else 1


def _check_residual_finite_width(args, plot) -> int:
    """check --finite-width --arch for a description that is not a plain MLP: a residual MLP's readout K1, V,
    Theta1, A, B, D, F at each input on its own, and V, K1, A, B, D, F (and Theta1 for smooth and piecewise-linear
    activations) at all inputs, against Monte Carlo 1/n fits
    (:func:`ntk_theory.validation.residual.check_residual_finite_width`); a description without derived 1/n
    rules is refused in one line naming the first such layer."""
    from .finite_width.residual import NotDerived
    from .validation.residual import check_residual_finite_width

    X = load_inputs(args.x)
    try:
        report = check_residual_finite_width(args.network, X, **({"widths": args.widths} if args.widths else {}),
                                             samples=args.samples, seed=args.seed, progress=_progress(args))
    except NotDerived as exc:
        raise NotSupportedForArchitecture(f"not yet supported for this architecture: {exc}") from None
    return _print_report(report, plot)


GENERAL_ARCHITECTURE_RUNNERS.update({"sample": _sample_architecture, "check": _check_architecture})


def _cmd_derive(args) -> int:
    from .activations import activation
    from .gaussian.derivation import latex_display, plain_text
    from .gaussian.display import display_text
    from .recursions import KernelRecursion

    if args.network is not None:
        return _derive_architecture(args)
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
    from .recursions.layer import C_W, C_b, lambda_b, lambda_W

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

        lb_, lw_ = learning_rate_factors(args.param, C_W=args.C_W, C_b=args.C_b, fan_in=1)
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
    rec = FiniteWidthRecursion(act, args.depth, C_W=C_W, C_b=C_b, param=args.param)
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

    if args.network is not None and not _mlp_from_arch(args, "finite-width"):
        return GENERAL_ARCHITECTURE_RUNNERS["finite-width"](args)
    out = _output_path(args.out)
    X = load_inputs(args.x)
    t0 = time.perf_counter()
    pred = finite_width(args.activation, X, args.depth, C_W=args.C_W, C_b=args.C_b, param=args.param,
                        widths=args.width if isinstance(args.width, list) else None, progress=_progress(args))
    seconds = time.perf_counter() - t0
    pred.save(out)
    print(pred)
    print(f"written to {out} in {seconds:.2f} s: " + ", ".join(pred.arrays()))
    if args.width is not None and not isinstance(args.width, list):
        at = pred.at_width(args.width)
        print(f"at width {args.width}: E[f f] =\n{at['output_second_moment']}\nE[Theta] =\n{at['ntk_mean']}")
    return 0


def _finite_width_architecture(args) -> int:
    """finite-width --arch for a description that is not a plain MLP: :func:`ntk_theory.finite_width.finite_width`
    of the description -- a residual MLP's per-layer K, Theta, V, K1, M3, A, B, D, F, Theta1 for each input on its own
    and the readout's tensors at all inputs (Theta1 for smooth and piecewise-linear activations; per input for other
    kinked ones)
    (:class:`~ntk_theory.finite_width.ResidualPredictions`); other
    descriptions are refused in one line naming the
    first layer without a derived 1/n rule."""
    import time

    from .finite_width import NotDerived, finite_width

    out = _output_path(args.out)
    X = load_inputs(args.x)
    t0 = time.perf_counter()
    try:
        pred = finite_width(args.network, X, progress=_progress(args))
    except NotDerived as exc:
        raise NotSupportedForArchitecture(f"not yet supported for this architecture: {exc}") from None
    seconds = time.perf_counter() - t0
    pred.save(out)
    print(pred)
    print(f"written to {out} in {seconds:.2f} s: " + ", ".join(pred.arrays()))
    return 0


GENERAL_ARCHITECTURE_RUNNERS["finite-width"] = _finite_width_architecture


def _cmd_kernel(args) -> int:
    import time

    from .codegen import CompiledKernel

    if args.chunks is None and args.scheduler is not None:
        raise ValueError("--scheduler needs --chunks (the tile size of the blocked kernel)")
    if args.network is not None and args.chunks is not None:
        return _kernel_blocked(args, args.network)
    if args.network is not None:
        return _kernel_architecture(args)
    if args.widths is not None and args.param != "standard":
        raise ValueError("--widths is for --param standard only (the kernel does not depend on the widths otherwise)")
    if args.chunks is not None:
        return _kernel_blocked(args, CompiledKernel(args.activation, args.depth, C_W=args.C_W, C_b=args.C_b,
                                                    param=args.param, widths=args.widths))
    out = _output_path(args.out)
    X1 = load_inputs(args.x, "--x")
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2")
    kern = CompiledKernel(args.activation, args.depth, C_W=args.C_W, C_b=args.C_b, param=args.param, widths=args.widths)
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
    if getattr(rec, "description", None) is not None:
        info["architecture"] = repr(rec.description)
    arrays = {"X1": X1} if X2 is None else {"X1": X1, "X2": X2}
    save_npz(out, "kernel", nngp=res.nngp, ntk=res.ntk, info=np.array(json.dumps(info)), **arrays)
    start = ("compiled code loaded from Numba's disk cache" if kern.from_cache
             else "compiling (not all was in Numba's disk cache)")
    print(f"{kern.recursion}: nngp and ntk of shape {res.nngp.shape} written to {out}")
    print(f"  {seconds + kern.compile_seconds:.3f} s: {start} {kern.compile_seconds:.2f} s, "
          f"evaluation {seconds:.3f} s"
          + (f"; quadrature error estimate {err:.1e}" if err else ""))
    if args.show_source:
        print(kern.source)
    return 0


def _kernel_blocked(args, network) -> int:
    """``kernel --chunks N``: the blocked kernel as Dask tasks (:func:`ntk_theory.distributed.blocked_kernel`)
    written to a Zarr store (resumed when it exists), on ``--scheduler`` (default: a local cluster)."""
    from .distributed import blocked_kernel

    if args.show_source:
        raise ValueError("--show-source is not available with --chunks")
    out = Path(args.out)
    if out.suffix == "":
        out = out.with_name(out.name + ".zarr")
    elif out.suffix != ".zarr":
        raise ValueError(f"cannot write {args.out} with --chunks: use a directory name ending in .zarr")
    X1 = load_inputs(args.x, "--x", spatial=True)
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2", spatial=True)
    res = blocked_kernel(network, X1, X2, chunks=args.chunks, store=out, scheduler=args.scheduler or "local",
                         progress=_progress(args), dtype=np.float32 if args.float32 else np.float64)
    info = res.info
    err = info["quadrature_error"]
    print(f"nngp and ntk of shape {res.nngp.shape} in {out} (tiles of {info['tile']}: {len(info['computed'])} "
          f"computed, {info['skipped']} already in the store)")
    print(f"  {info['seconds']:.3f} s on {info['scheduler'] or 'no scheduler (all tiles stored)'}; "
          f"{info['tile_seconds']:.3f} s in tiles" + (f"; quadrature error estimate {err:.1e}" if err else ""))
    return 0


def save_npz(path, where: str, **arrays) -> None:
    """``np.savez`` of arrays named in the toolkit's vocabulary (:mod:`ntk_theory.quantities`)."""
    from .quantities import check_names

    check_names(arrays, f"the .npz of {where}")
    np.savez(path, **arrays)


def _kernel_architecture(args) -> int:
    """``kernel --arch``: stax ``kernel_fn`` of the description (compiled Numba kernels for large inputs, images
    included; the NumPy interpreter otherwise), inputs (N, d) or images (N, W, C) / (N, H, W, C)."""
    import time

    from .architecture.mlp import as_mlp

    if args.show_source:
        raise ValueError("--show-source: print the source of an --arch kernel in Python with "
                         "ntk_theory.codegen.graph.compiled_graph_kernel(description).source")
    out = _output_path(args.out)
    X1 = load_inputs(args.x, "--x", spatial=True)
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2", spatial=True)
    desc = args.network.description
    t0 = time.perf_counter()
    res = args.network.kernel_fn(X1, X2, ("nngp", "ntk"))
    seconds = time.perf_counter() - t0
    err = float(res.info.get("quadrature_error") or 0.0)
    dtype = np.float32 if args.float32 else np.float64
    info = {"architecture": repr(desc)}
    mlp = as_mlp(desc)
    if mlp is not None:  # the MLP path's fields too
        info.update({"activation": [mlp.activation.name] * mlp.depth, "depth": mlp.depth, "C_W": list(mlp.C_W),
                     "C_b": list(mlp.C_b), "param": mlp.param, "widths": list(mlp.hidden_widths)})
    info.update({"dtype": np.dtype(dtype).name, "quadrature_error": err, "x2_given": X2 is not None,
                 "evaluated_by": res.info["evaluated_by"]})
    arrays = {"X1": X1} if X2 is None else {"X1": X1, "X2": X2}
    save_npz(out, "kernel", nngp=res.nngp.astype(dtype), ntk=res.ntk.astype(dtype), info=np.array(json.dumps(info)),
             **arrays)
    print(f"{desc!r}: nngp and ntk of shape {res.nngp.shape} written to {out}")
    print(f"  {seconds:.3f} s (float64, {res.info['evaluated_by']})" + (f"; quadrature error estimate {err:.1e}" if err else ""))
    return 0


def _derive_architecture(args) -> int:
    """derive --arch: the layer map of every layer, in order (plain text, or Network.latex() with --latex);
    with --finite-width, a plain MLP's 1/n maps."""
    from .architecture import leaves, where
    from .architecture.mlp import as_mlp, why_not_mlp
    from .gaussian.derivation import latex_display

    net = args.network
    desc = net.description
    if args.finite_width:
        from .finite_width.description import recursion_for
        from .finite_width.residual import NotDerived, ResidualRecursion

        try:
            rec = recursion_for(desc)
        except NotDerived as exc:
            raise NotSupportedForArchitecture(f"not yet supported for this architecture: {exc}") from None
        if isinstance(rec, ResidualRecursion):
            return _derive_residual_finite_width(rec, desc, args)
        mlp = as_mlp(desc)
        if mlp is None:
            raise NotSupportedForArchitecture(f"not yet supported for this architecture: {why_not_mlp(desc)}")
        if len(set(mlp.C_W)) > 1 or len(set(mlp.C_b)) > 1:
            raise NotSupportedForArchitecture("not yet supported for this architecture: derive --finite-width "
                                              "with different C_W or C_b per layer")
        args.depth, args.param, args.C_W, args.C_b = mlp.depth, mlp.param, mlp.C_W[0], mlp.C_b[0]
        return _derive_finite_width(mlp.activation, args)
    if args.latex:
        print(f"% layer maps (K, Theta) -> (K', Theta') of {desc!r}")
        print(latex_display(net.latex()))
        return 0
    print(f"network {desc!r}")
    print("layer maps (K, Theta) -> (K', Theta'), in order; K = E[h_a h_b] and Theta the NTK of the layer's input h "
          "(an activation's map is the Gaussian expectation over the Dense output before it, "
          "(u, v) ~ N(0, [[k11, k12], [k12, k22]]))")
    for path, layer in leaves(desc):
        print(f"\n{where(path)}: {layer!r}")
        for line in layer_map_text(layer):
            print("  " + line)
    return 0


#: the one-input statistics of a residual layer, in the order printed by derive --finite-width --arch
RESIDUAL_DERIVE_FIELDS = ("K", "Th", "K1", "V", "M3", "Th1", "A", "B", "D", "F")

#: the maps of a residual MLP printed by derive --finite-width --arch (plain text; docs/finite_width.md,
#: "Residual networks"; ntk_theory/finite_width/residual.py)
RESIDUAL_MAPS = (
    "infinite width, one input (z(l+1) = xi z(l) + gamma [W s(z(l)) + b]):",
    "  K(l+1)     = xi^2 K(l) + gamma^2 (C_b + C_W <s^2>_K(l))",
    "  Theta(l+1) = xi^2 Theta(l) + gamma^2 (lambda_b + lambda_W <s^2>_K(l) + C_W <s'^2>_K(l) Theta(l))",
    "  (layer 1: K = C_b + C_W G0, Theta = lambda_b + lambda_W G0; the readout: xi = 0, gamma = 1)",
    "1/n corrections by the neuron-path expansion (a one-step recursion in K, V, K1, M3 does not close):",
    "  path covariance P(l, m) = xi^(l-m) K(m), response c(l, m) = dK(l)/dG(m) = gamma^2 xi^(2(l-1-m)),",
    "  fields G(m) = C_b + C_W (1/n) sum_k s(z_k(m))^2, phi_a = C_W (s(z(a))^2 - <s^2>), psi = (1 - A)^-1 phi,",
    "  A(a, a') = C_W d<s^2>/dK(a) c(a, a'):",
    "  V(l)  = 2 sum_m c(l,m) Cov(z(l)^2, psi_m) + sum_(m,m') c(l,m) c(l,m') Cov(psi_m, psi_m')",
    "  M3(l) = sum_m c(l,m) Cov(z(l), psi_m)",
    "  K1(l) = sum_m c(l,m) e(m), e(a) = C_W [d<s^2>/dK K1(a) + (1/2) sum_a' c(a,a') Cov((s^2)''(z(a)), psi_a')",
    "                                       + (1/2) d2<s^2>/dK2 sum_(a',b') c(a,a') c(a,b') Cov(psi_a', psi_b')]",
    "  NTK: forward tangents tau(l+1) = xi tau + gamma [W s'(z) tau + sqrt(H) r], (z, tau, tau') one particle;",
    "  A = n Cov(tau_i^2, tau'_j^2), B = n Cov(tau_i tau'_i, tau_j tau'_j), D = n Cov(tau_i^2, z_j^2),",
    "  F = n Cov(tau_i z_i, tau_j z_j), Theta1 = n (E[tau_i^2] - Theta), by the same expansion in six fields",
)


def _derive_residual_finite_width(rec, desc, args) -> int:
    """derive --finite-width --arch for a residual MLP: how the description was read (per-layer xi, gamma, C_W,
    C_b), the one-input maps (:data:`RESIDUAL_MAPS`) and the values of every layer for one input with G0 = 1
    (:meth:`ntk_theory.finite_width.residual.ResidualRecursion.one_input`, numerical: the expansion has no
    per-layer closed form)."""
    from .gaussian.derivation import plain_text

    L = rec.depth
    states = rec.one_input(G0=1.0)
    head = [f"network {desc!r}",
            f"read as a residual MLP: activation s(x) = {plain_text(rec.activation.expr)}, depth {L}, param {rec.param}",
            "  layer 1: z(1) = W(1) x + b(1)" + f", C_W = {rec.C_W[0]:g}, C_b = {rec.C_b[0]:g}"]
    head += [f"  layer {m}: xi = {rec.xi[m - 2]:g}, gamma = {rec.gamma[m - 2]:g}, C_W = {rec.C_W[m - 1]:g}, "
             f"C_b = {rec.C_b[m - 1]:g}" for m in range(2, L + 1)]
    head.append(f"  readout: C_W = {rec.C_W[L]:g}, C_b = {rec.C_b[L]:g}")
    rows = [f"layers 1 .. {L + 1} for one input with G0 = x.x / n0 = 1 (layer {L + 1} = readout; quadrature error "
            f"<= {max(s.error for s in states):.1e}; Theta1 = ntk_correction, K1 = nngp_correction):"]
    for l, st in enumerate(states, start=1):
        rows.append(f"  layer {l}: " + ", ".join(f"{n} = {getattr(st, n):.10g}" for n in RESIDUAL_DERIVE_FIELDS))
    if args.latex:
        print("\n".join("% " + line for line in head + list(RESIDUAL_MAPS) + rows))
        return 0
    print("\n".join(head))
    print("\n" + "\n".join(RESIDUAL_MAPS))
    print("\n" + "\n".join(rows))
    return 0


def layer_map_text(layer) -> list:
    """The infinite-width map (K, Theta) -> (K', Theta') of one layer as plain-text lines
    (:func:`ntk_theory.stax.maps.layer_map`)."""
    from .stax.maps import layer_map

    return list(layer_map(layer).text)


def _cmd_check(args) -> int:
    from .validation import check, check_finite_width

    if args.network is not None and not _mlp_from_arch(args, "check"):
        return GENERAL_ARCHITECTURE_RUNNERS["check"](args)
    plot = _plot_path(args.plot)
    X = load_inputs(args.x)
    if args.finite_width:
        report = check_finite_width(args.activation, X, args.depth, C_W=args.C_W, C_b=args.C_b, param=args.param,
                                    widths=args.widths or [32, 64, 128, 256], samples=args.samples, seed=args.seed,
                                    progress=_progress(args))
    else:
        report = check(args.activation, X, args.depth, C_W=args.C_W, C_b=args.C_b, param=args.param,
                       widths=args.widths or [64, 128, 256, 512], samples=args.samples, seed=args.seed,
                       progress=_progress(args), mp_check=args.mp_check)
    return _print_report(report, plot)


def _cmd_empirical_ntk(args) -> int:
    import time

    from . import MLP
    from .empirical import empirical_ntk, plan

    if args.network is not None and not _mlp_from_arch(args, "empirical-ntk"):
        return GENERAL_ARCHITECTURE_RUNNERS["empirical-ntk"](args)
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
    info = {"activation": getattr(args.activation, "name", args.activation), "depth": depth, "widths": list(net.spec.widths), "C_W": list(net.spec.C_W),
            "C_b": list(net.spec.C_b), "param": net.spec.param, "seed": args.seed, "method": est.method,
            "trace_outputs": not args.no_trace, "dtype": np.dtype(dtype).name}
    if args.network is not None:
        info["architecture"] = repr(args.network)
    save_npz(out, "empirical-ntk", ntk=ntk, info=np.array(json.dumps(info)))
    print(f"{net}: empirical NTK of shape {ntk.shape} by {est.method} (blocks of {est.block} inputs, "
          f"predicted {est.flops:.3g} FLOPs, {est.seconds:.3g} s) in {seconds:.3f} s, written to {out}")
    return 0


def _empirical_ntk_architecture(args) -> int:
    """empirical-ntk --arch for a description that is not a plain MLP: parameters drawn by the reference
    network's ``init`` (neural-tangents' layout and distribution, seed ``--seed``), then
    :func:`ntk_theory.empirical.empirical_ntk` (neural-tangents' J J^T)."""
    import time

    from .empirical import empirical_ntk, plan
    from .reference.graph import init

    out = _output_path(args.out)
    X1 = load_inputs(args.x, spatial=True)  # (N, d), or (N, W, C) / (N, H, W, C) for convolutions
    X2 = None if args.x2 is None else load_inputs(args.x2, "--x2", spatial=True)
    description = getattr(args.network, "description", args.network)
    _, params = init(description, args.seed, X1.shape)
    dtype = np.float32 if args.float32 else np.float64
    est = plan(description, X1.shape[0], None if X2 is None else X2.shape[0], args.method, not args.no_trace,
               args.batch_size, dtype, input_dim=X1.shape[1:] if X1.ndim > 2 else X1.shape[1])
    t0 = time.perf_counter()
    ntk = empirical_ntk(description, X1, X2, method=est.method, trace_outputs=not args.no_trace,
                        batch_size=args.batch_size, dtype=dtype, params=params)
    seconds = time.perf_counter() - t0
    info = {"architecture": repr(args.network), "seed": args.seed, "method": est.method,
            "trace_outputs": not args.no_trace, "dtype": np.dtype(dtype).name}
    save_npz(out, "empirical-ntk", ntk=ntk, info=np.array(json.dumps(info)))
    print(f"{args.network!r}: empirical NTK of shape {ntk.shape} by {est.method} (blocks of {est.block} inputs) "
          f"in {seconds:.3f} s, written to {out}")
    return 0


GENERAL_ARCHITECTURE_RUNNERS["empirical-ntk"] = _empirical_ntk_architecture


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
        raise ValueError("give both --C-W and --C-b to analyse one initialisation")
    res = criticality(args.activation, dps=args.dps)
    print(res.text())
    if args.C_W is not None:
        print(f"\nfixed points of K' = C_b + C_W <s^2>_K at C_W = {args.C_W:g}, C_b = {args.C_b:g}:")
        try:
            points = fixed_points(args.activation, C_W=args.C_W, C_b=args.C_b)
        except ValueError as exc:  # a line of fixed points (scale-invariant criticality)
            print(f"  {exc}")
            points = [at(args.activation, 1.0, C_W=args.C_W, C_b=args.C_b)]
        for fp in points or []:
            print("  " + repr(fp))
        if not points:
            print("  none in K = 1e-4 .. 1e4 (K grows or decays without bound)")
    if plot:
        phase_diagram(args.activation).plot(plot)
        print(f"phase diagram written to {plot}")
    return 0


#: the options of ``dynamics --finite-width`` (an error names them when given without it)
FINITE_WIDTH_DYNAMICS_OPTIONS = {"y": "--y", "x_test": "--x-test", "steps": "--steps", "width": "--width",
                                 "dntk": "--dntk", "out": "--out", "x": "--x", "learning_rate": "--learning-rate",
                                 "loss": "--loss"}


def _steps(text: str) -> np.ndarray:
    """'1,10,100' -> array([1., 10., 100.]); 'inf' allowed (converged)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts (integers >= 0 or inf); got "
                                         f"{text!r}") from None
    if any(not (p >= 0 and (np.isinf(p) or p == int(p))) for p in parts):
        raise argparse.ArgumentTypeError(f"steps must be integers >= 0 or inf; got {text!r}")
    return np.array(parts)


def load_targets(path: str, n: int, name: str = "--y", outputs: bool = False) -> np.ndarray:
    """Training targets y (N,) (one output) from a .npy file or a text file with one number per line;
    (N, 1) is taken as (N,); the count must match the N training inputs.  ``outputs``: (N, O) for O outputs
    too (a .npy array or a text file with O numbers per line)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{name} {path}: no such file")
    try:
        y = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(io.StringIO(
            p.read_text().replace(",", " ")), ndmin=2 if outputs else 1)
        y = np.asarray(y, dtype=float)
    except (ValueError, OSError, UnicodeDecodeError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read targets from {path}: {first}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if not (y.ndim == 1 or (outputs and y.ndim == 2 and y.shape[1] > 0)) or y.shape[0] != n:
        what = "one row of O outputs" if outputs else "one output"
        raise ValueError(f"{name} {path}: expected {n} targets ({what} per training input), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name} {path}: the targets have non-finite entries (NaN or inf)")
    return y


def _load_dntk(path: str) -> dict:
    """P, Q, R, S, T, U from an .npz (the readout's dNTK/ddNTK tensors over train then test inputs)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--dntk {path}: no such file")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"--dntk {path}: cannot read it as .npz: {first}") from None
    missing = [k for k in "PQRSTU" if k not in arrays]
    if missing:
        raise ValueError(f"--dntk {path}: missing array(s) {', '.join(missing)} (need P, Q, R, S, T, U)")
    return {k: arrays[k] for k in "PQRSTU"}


def _cmd_dynamics_finite_width(args) -> int:
    """The trained network's mean at infinite width and its O(1/n) coefficients (linearised model and the
    NTK's motion) by :class:`ntk_theory.dynamics.FiniteWidthDynamics`."""
    from .dynamics import FiniteWidthDynamics

    if args.x is None or args.y is None or args.steps is None:
        raise ValueError("--finite-width needs --x X.npy, --y Y.npy and --steps S1,S2,...")
    args.learning_rate = 1.0 if args.learning_rate is None else args.learning_rate
    args.loss = "mean" if args.loss is None else args.loss
    if isinstance(args.width, list) or (args.width is not None and args.width < 1):
        raise ValueError(f"--width takes one hidden width n >= 1; got {args.width}")
    if args.param == "standard":
        raise ValueError("--finite-width: the 1/n corrections are derived for --param ntk or unit, not standard")
    out = _output_path(args.out) if args.out else None
    X = load_inputs(args.x, "--x")
    y = load_targets(args.y, X.shape[0], outputs=True)
    XT = load_inputs(args.x_test, "--x-test") if args.x_test is not None else None
    if XT is not None and XT.shape[1] != X.shape[1]:
        raise ValueError(f"--x-test has inputs of dimension {XT.shape[1]}, --x of dimension {X.shape[1]}")
    dntk = _load_dntk(args.dntk) if args.dntk else None
    dyn = FiniteWidthDynamics.from_network(args.activation, X, y, XT, args.depth, C_W=args.C_W, C_b=args.C_b,
                                           param=args.param, learning_rate=args.learning_rate, loss=args.loss,
                                           dntk=dntk)
    steps = args.steps
    per = (dyn.n_inputs,) if y.ndim == 1 else (dyn.n_inputs, dyn.n_outputs)
    mean, motion = ({part: np.zeros((steps.size,) + per) for part in ("value", "correction")} for _ in range(2))
    # gradient descent throughout (steps = inf: its limit)
    for store, e in ((mean, dyn.mean(steps=steps)), (motion, dyn.motion(steps=steps))):
        for part in store:
            store[part][:] = getattr(e, part)
    mean, motion = (argparse.Namespace(**d) for d in (mean, motion))
    N = X.shape[0]
    rows = [f"train {i}" for i in range(N)] + [f"test {j}" for j in range(dyn.n_inputs - N)]
    O = dyn.n_outputs if y.ndim == 2 else 0
    print(f"trained mean (gradient descent, eta = {args.learning_rate:g}, loss {args.loss}; {args.activation}, depth "
          f"{args.depth}, C_W = {args.C_W}, C_b = {args.C_b}{f'; {O} outputs' if O else ''}): E[f] = trained_mean + "
          f"(trained_mean_correction + trained_motion_correction) / n")
    head = f"{'step':>8s} {'input':>9s}" + (f" {'output':>6s}" if O else "")
    head += f" {'trained_mean':>14s} {'linearised 1/n':>15s} {'motion 1/n':>12s}"
    if args.width is not None:
        head += f" {'at n = ' + str(args.width):>14s}"
    print(head)
    total = mean.value + (mean.correction + motion.correction) / args.width if args.width else None
    for k, t in enumerate(steps):
        for a, name in enumerate(rows):
            for o in range(max(O, 1)):
                at = (k, a, o) if O else (k, a)
                line = f"{t:8g} {name:>9s}" + (f" {o:6d}" if O else "")
                line += f" {mean.value[at]:14.6g} {mean.correction[at]:15.6g} {motion.correction[at]:12.6g}"
                if total is not None:
                    line += f" {total[at]:14.6g}"
                print(line)
    if out is not None:
        arrays = dict(X=X, y=y, steps=steps, trained_mean=mean.value, trained_mean_correction=mean.correction,
                      trained_motion_correction=motion.correction, **{k: dyn.dntk[k] for k in "PQRSTU"})
        if XT is not None:
            arrays["X_test"] = XT
        cov, cov_motion = dyn.covariance(steps=steps), dyn.motion_covariance(steps=steps)
        arrays.update(trained_covariance=cov.value, trained_covariance_correction=cov.correction,
                      trained_motion_covariance_correction=cov_motion.correction)
        if total is not None:
            arrays["trained_mean_at_width"] = total
            arrays["trained_covariance_at_width"] = (cov.value
                                                     + (cov.correction + cov_motion.correction) / args.width)
        save_npz(out, "dynamics --finite-width", **arrays)
        print(f"written to {out}")
    return 0


def _cmd_dynamics(args) -> int:
    from .dynamics.widths import width_scaling

    if args.finite_width:
        return _cmd_dynamics_finite_width(args)
    given = [flag for name, flag in FINITE_WIDTH_DYNAMICS_OPTIONS.items() if getattr(args, name, None) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} belong to --finite-width (the trained network at O(1/n))")
    res = width_scaling(args.widths, seeds=args.seeds, depth=args.depth, activation=args.activation,
                        C_W=args.C_W, C_b=args.C_b, param=args.param, seed=args.seed)
    print(f"full-batch GD vs the infinite-width NTK prediction ({res.config})")
    print(res.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ntk-theory",
        description="Exact kernels of wide neural networks, and the finite networks that check them.",
        epilog=f"Inputs (--x, and --x2 where a second set is taken; --x1 is --x): {INPUT_HELP}.  Networks: ACTIVATION "
               "and --depth, --width, --C-W, --C-b, --param for an MLP, or --arch in stax syntax (see COMMAND --help).  "
               "Names of the arrays written: `ntk-theory quantities`.  Errors are printed as one line; --debug shows the "
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
    _add_network_options(p, "sample")
    p.add_argument("--samples", type=int, default=10_000, help="number of networks (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--batches", type=int, default=32, help="batches for standard errors (default: 32)")
    p.add_argument("--sampler", choices=("projected", "dense"), default="projected",
                   help="'projected' draws weights only along used directions (exact, fast); 'dense' full matrices")
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--out", default=None, help="save estimates to .npz or .json (no suffix: .npz): X, info and "
                   + _describe(MONTE_CARLO_ARRAYS) + ", each NAME with NAME_stderr")
    p.add_argument("--max-rows", type=int, default=12, help="distinct entries printed per estimate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("derive", parents=[common], help="derive and print the kernel maps of an activation and how they were obtained")
    p.add_argument("activation", nargs="?", default=None, help="library name or expression in x (default: relu)")
    p.add_argument("--depth", type=int, default=None,
                   help="number of hidden layers; the one-input iterates K(l), Theta(l) are printed up to the output "
                        "(default: 1)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default=None, help="(default: ntk)")
    p.add_argument("--latex", action="store_true",
                   help="print LaTeX, one display formula per line in $$ ... $$, headings as %% comments")
    p.add_argument("--steps", type=int, default=4, help="depth of the derivation tree printed (default: 4)")
    p.add_argument("--finite-width", action="store_true",
                   help="print the 1/n layer maps (V, K1, A, B, D, F, Theta1) and, for closed forms, their iterates")
    p.add_argument("--C-W", dest="C_W", type=float, default=None,
                   help="C_W (default: the symbol C_W; with --finite-width: 1)")
    p.add_argument("--C-b", dest="C_b", type=float, default=None,
                   help="C_b (default: the symbol C_b; with --finite-width: 0)")
    _add_arch(p, "derive", ["activation", "depth", "param", "C_W", "C_b"])
    p.set_defaults(func=_cmd_derive)

    p = sub.add_parser("kernel", parents=[common], help="infinite-width NNGP and NTK of the output, written to .npz")
    _add_mlp_options(p, ("ntk", "unit", "standard"))
    p.add_argument("--widths", type=_widths, default=None, help="hidden widths (param=standard only)")
    p.add_argument("--x", "--x1", dest="x", default=None,
                   help=f"inputs X1 (N1, d): {INPUT_HELP}; default: {DEFAULT_INPUTS_DESCRIPTION}")
    p.add_argument("--x2", default=None, help="inputs X2 (N2, d) (default: X1)")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added) with arrays "
                   + _describe(("nngp", "ntk")) + " of shape (N1, N2), X1 (and X2) and info (JSON: the architecture "
                   "in stax syntax, activation, depth, C_W, C_b, param, widths, dtype, quadrature_error)")
    p.add_argument("--float32", action="store_true", help="store the result in float32 (arithmetic stays float64)")
    p.add_argument("--show-source", action="store_true", help="print the generated Numba code")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--chunks", type=int, default=None, metavar="N",
                   help="blocked kernel: tiles of N x N entries as Dask tasks, written to a Zarr store --out K.zarr "
                   "(resumed when it exists; needs ntk-theory[distributed])")
    p.add_argument("--scheduler", default=None, metavar="local|ADDRESS",
                   help="with --chunks: 'local' (default: a LocalCluster of one worker per core), 'processes', "
                   "'threads', 'synchronous', or a running scheduler's address tcp://host:port")
    _add_arch(p, "kernel", ["activation", "depth", "C_W", "C_b", "param", "widths"])
    p.set_defaults(func=_cmd_kernel)

    p = sub.add_parser("finite-width", parents=[common], help="finite-width 1/n predictions (PDLT) at inputs X, written to .npz")
    _add_mlp_options(p, ("ntk", "unit"))
    p.add_argument("--x", default=None, help=f"inputs X (N, d): {INPUT_HELP}; default: {DEFAULT_INPUTS_DESCRIPTION}")
    p.add_argument("--width", type=_widths, default=None,
                   help="print the corrected values at this width (n1,n2,...: unequal hidden widths)")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added): "
                   + _describe(FINITE_WIDTH_ARRAYS) + ", quadrature_error, description; --arch with a residual "
                   "block (serial(FanOut(2), parallel(Identity(), serial(Relu(), Dense(n))), FanInSum())): per input "
                   "(each on its own) and layer " + _describe(("K", "Th", "V", "K1", "M3", "A", "B", "D", "F", "Th1"))
                   + " (N, L+1); the readout's nngp, ntk, nngp_correction, output_cumulant, ntk_covariance, "
                   "ntk_output_covariance at all inputs and ntk_correction (N, N) at all inputs for smooth and "
                   "piecewise-linear activations (relu, leaky_relu, abs), (N, 1, 1) at each input alone for other "
                   "kinked ones (elu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_arch(p, "finite-width", ["activation", "depth", "C_W", "C_b", "param", "width"])
    p.set_defaults(func=_cmd_finite_width)

    p = sub.add_parser("check", parents=[common], help="derive, evaluate and compare with Monte Carlo over finite networks (the main job)")
    _add_network_options(p, "check", width=False)
    p.add_argument("--widths", type=_width_list, default=None,
                   help="finite widths to sample (default: 64,128,256,512; with --finite-width 32,64,128,256; "
                        "--arch: 64,128,256; --finite-width --arch of a residual MLP: 16,32,64,128)")
    p.add_argument("--samples", type=int, default=20_000, help="networks per width (default: 20000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finite-width", action="store_true",
                   help="check the 1/n predictions (K1, Theta1, V, A, B, D, F) against Monte Carlo fits over the widths "
                        "(with --arch: plain MLPs, and residual MLPs: each input on its own and, but Theta1, all inputs)")
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
    p.add_argument("--outputs", type=int, default=None, help="output dimension O (default: 1)")
    _add_network_options(p, "empirical-ntk")
    p.set_defaults(network_options=("activation", "depth", "width", "C_W", "C_b", "param", "outputs"))
    p.add_argument("--x2", default=None, help="inputs X2 (N2, d) (default: X)")
    p.add_argument("--method", default="auto", help=f"one of {', '.join(methods)} (default: auto, by the cost model)")
    p.add_argument("--no-trace", action="store_true", help="full (N1, N2, O, O) kernel instead of the mean over outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random network (default: 0)")
    p.add_argument("--batch-size", type=int, default=None, help="inputs per block (default: from a 2 GiB memory budget)")
    p.add_argument("--float32", action="store_true", help="compute and store in float32")
    p.add_argument("--out", required=True, help="output .npz (no suffix: .npz added) with the array ntk (the empirical "
                   "NTK, (N1, N2) or (N1, N2, O, O)) and info (JSON)")
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

    p = sub.add_parser("criticality", parents=[common], help="universality class, critical (C_W, C_b), fixed points, chi's, depth scales",
                       description="Criticality of an activation: exact where its class gives it, else mpmath.")
    p.add_argument("activation", help="library name or expression in x (continuous)")
    p.add_argument("--dps", type=int, default=30, help="digits for the critical point (default: 30)")
    p.add_argument("--C-W", dest="C_W", type=float, default=None, help="also analyse this C_W (with --C-b)")
    p.add_argument("--C-b", dest="C_b", type=float, default=None, help="also analyse this C_b (with --C-W)")
    p.add_argument("--plot", default=None, help="write the order/chaos phase diagram to this PNG (needs matplotlib)")
    p.set_defaults(func=_cmd_criticality)

    p = sub.add_parser("dynamics", parents=[common], help="train finite networks by GD and compare with the infinite-width NTK prediction",
                       description="Deviation from the NTK prediction and NTK change vs width, with power-law fits.")
    p.add_argument("activation", nargs="?", default="relu", help="activation name (default: relu)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers (default: 2)")
    p.add_argument("--widths", type=_width_list, default=[64, 256, 1024],
                   help="widths (default: 64,256,1024)")
    p.add_argument("--seeds", type=int, default=6, help="networks per width (default: 6)")
    p.add_argument("--C-W", dest="C_W", type=float, default=2.0, help="C_W (default: 2)")
    p.add_argument("--C-b", dest="C_b", type=float, default=0.1, help="C_b (default: 0.1)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group(
        "--finite-width", "the trained network's mean at infinite width and its 1/n coefficients (the linearised "
        "model's and the NTK's motion), FiniteWidthDynamics; ACTIVATION, --depth, --C-W, --C-b, --param as above")
    g.add_argument("--finite-width", action="store_true", help="compute the trained mean at O(1/n)")
    g.add_argument("--x", default=None, help=f"training inputs X (N, d): {INPUT_HELP}")
    g.add_argument("--y", default=None, help="training targets (N,) or (N, O) for O outputs: .npy or text, one row "
                   "per input")
    g.add_argument("--x-test", dest="x_test", default=None, help=f"test inputs (M, d): {INPUT_HELP}")
    g.add_argument("--steps", type=_steps, default=None, help="gradient-descent steps, e.g. 1,10,100 (inf: converged)")
    g.add_argument("--learning-rate", dest="learning_rate", type=float, default=None,
                   help="eta (default: 1); the rate is c = eta / (N O) (--loss mean) or eta (--loss sum)")
    g.add_argument("--loss", choices=("mean", "sum"), default=None,
                   help="||f - y||^2 / (2 N O) (mean, default) or ||f - y||^2 / 2 (sum)")
    g.add_argument("--width", type=_widths, default=None, help="also print the mean at this width n")
    g.add_argument("--dntk", default=None, metavar="FILE.npz",
                   help="the readout's P, Q, R, S, T, U over train then test inputs (default: the recursions; "
                        "`ntk-theory quantities`)")
    g.add_argument("--out", default=None, help="write to .npz: X, y, X_test, steps and "
                   + _describe(("trained_mean", "trained_mean_correction", "trained_motion_correction",
                                "trained_mean_at_width", "trained_covariance", "trained_covariance_correction",
                                "trained_motion_covariance_correction", "trained_covariance_at_width", "P", "Q", "R", "S", "T", "U")))
    p.set_defaults(func=_cmd_dynamics)

    p = sub.add_parser("quantities", parents=[common], help="the names of the arrays the toolkit writes and returns",
                       description="Every quantity name with its symbol, 1/n order, shape and meaning "
                                   "(ntk_theory.quantities).")
    p.set_defaults(func=_cmd_quantities)
    return parser


def _cmd_quantities(args) -> int:
    from .quantities import table

    print(table())
    return 0


#: the arrays of a finite-width file (ntk_theory.finite_width.predictions.ARRAYS; a test keeps them equal)
FINITE_WIDTH_ARRAYS = ("nngp", "ntk", "nngp_correction", "ntk_correction", "ntk_covariance", "output_cumulant",
                       "ntk_output_covariance", "V", "A", "B", "D", "F")
#: the estimates of a Monte Carlo file (ntk_theory.montecarlo.statistics.ESTIMATES; a test keeps them equal)
MONTE_CARLO_ARRAYS = ("output_second_moment", "ntk_mean", "ntk_covariance", "kernel_mean", "kernel_covariance",
                      "output_cumulant")


def _describe(names) -> str:
    from .quantities import describe

    return describe(names)


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _accuracy_warnings_as_lines(prog, debug):
    """A ``warnings.showwarning`` that prints an :class:`ntk_theory.AccuracyWarning` as one line on standard error
    (``<prog>: warning: <message>``; with --debug the usual two lines with the source location)."""
    import warnings

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, _checks.AccuracyWarning) and not debug:
            print(f"{prog}: warning: {_one_line(message)}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def main(argv=None) -> int:
    """Run one command; every error is one line on standard error (exit 2), with --debug the traceback; every
    :class:`ntk_theory.AccuracyWarning` (a result whose error estimate exceeds its tolerance) one line too."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"ntk-theory {args.command}"
    with warnings.catch_warnings():
        warnings.showwarning = _accuracy_warnings_as_lines(prog, args.debug)
        return _run_command(args, prog)


def _run_command(args, prog) -> int:
    try:
        _resolve_network(args)
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
    except Exception as exc:
        if args.debug:
            raise
        print(f"{prog}: internal error ({type(exc).__name__}): {_one_line(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
