"""One finite_width(act, X, 3, C_W, C_b) timing of the package on PYTHONPATH, for side-by-side runs against an
exported older commit:

    git archive REV ntk_theory | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python benchmarks/bench_finite_width_one.py tanh 8 1.5 0.1 old.npz
    python benchmarks/bench_finite_width_one.py tanh 8 1.5 0.1 new.npz

X (N, 16) standard normal (seed 0); best of 2 after an untimed call at 3 inputs; prints the seconds and the
quadrature error estimate as JSON and saves the readout arrays for comparison.
"""
import sys, time, json
import numpy as np
from ntk_theory.finite_width import finite_width
act, N, CW, Cb = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
X = np.random.default_rng(0).standard_normal((N, 16))
finite_width(act, X[:3], 3, C_W=CW, C_b=Cb)  # untimed: compiled modules loaded
best = []
for _ in range(2):
    t0 = time.perf_counter(); r = finite_width(act, X, 3, C_W=CW, C_b=Cb); best.append(time.perf_counter() - t0)
np.savez(sys.argv[5], **r.arrays())
print(json.dumps({"seconds": min(best), "error": float(r.quadrature_error)}))
