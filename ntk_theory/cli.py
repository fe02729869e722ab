"""The ``ntk-theory`` command line: one subcommand per job, each a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_INPUTS_DESCRIPTION, default_inputs


def _floats(text: str):
    """'2' -> 2.0, '2,1.5,1' -> [2.0, 1.5, 1.0] (one value per layer)."""
    parts = [float(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


def _widths(text: str):
    parts = [int(p) for p in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


def load_inputs(path: str | None) -> np.ndarray:
    """Inputs X (N, d) from a .npy file or a whitespace/comma separated text file; default if None."""
    if path is None:
        return default_inputs()
    p = Path(path)
    if not p.exists():
        raise ValueError(f"input file {path} does not exist")
    X = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
    return np.atleast_2d(X)


def _add_network_options(p: argparse.ArgumentParser, *, width: bool = True) -> None:
    p.add_argument("activation", nargs="?", default="relu", help="activation name (default: relu)")
    p.add_argument("--depth", type=int, default=3, help="number of hidden layers L (default: 3)")
    if width:
        p.add_argument("--width", type=_widths, default=256, help="hidden width n, or n1,n2,... (default: 256)")
    p.add_argument("--C-W", dest="C_W", type=_floats, default=2.0, help="weight variance C_W, or one per layer (default: 2)")
    p.add_argument("--C-b", dest="C_b", type=_floats, default=0.0, help="bias variance C_b, or one per layer (default: 0)")
    p.add_argument("--param", choices=("ntk", "unit", "standard"), default="ntk", help="NTK parameterization (default: ntk)")
    p.add_argument("--x", dest="x", default=None, help=f"inputs X (N, d) as .npy or text; default: {DEFAULT_INPUTS_DESCRIPTION}")


def _cmd_sample(args) -> int:
    from .montecarlo import sample_statistics

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
        progress=not args.quiet,
    )
    print(result.table(max_rows=args.max_rows))
    if args.out:
        path = result.save(args.out)
        print(f"saved to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ntk-theory",
        description="Exact kernels of wide neural networks, and the finite networks that check them.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ntk-theory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "sample",
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
    p.add_argument("--out", default=None, help="save estimates to .npz or .json")
    p.add_argument("--max-rows", type=int, default=12, help="distinct entries printed per estimate")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_sample)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"ntk-theory {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
