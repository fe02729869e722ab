r"""Each layer's infinite-width map (K, Theta) -> (K', Theta') as text and as LaTeX: what ``derive --arch`` prints
and what a :class:`~ntk_theory.stax.Network` shows in Jupyter.  One rule per layer type (the rules themselves are
those of :mod:`ntk_theory.recursions.graph`; K = E[h_a h_b] and Theta the NTK of the layer's input h, per
position pair (p, p') for images).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..architecture import (AvgPool, Conv, Dense, Elementwise, FanInConcat, FanInSum, FanOut, Flatten,
                            GlobalAvgPool, Identity, LayerNorm)


@dataclass(frozen=True)
class LayerMap:
    """A layer's map: ``text`` (lines of plain text) and ``latex`` (one LaTeX expression)."""

    text: tuple
    latex: str


@functools.singledispatch
def layer_map(layer) -> LayerMap:
    """The map of ``layer`` (a layer without a kernel rule says so)."""
    name = type(layer).__name__
    return LayerMap((f"no kernel rule for {name}",), r"\text{" + name + r"\ (no kernel rule)}")


def _lambda_text(layer) -> tuple[str, str]:
    lb, lw = layer.learning_rate_factors(1)
    if layer.parameterization == "standard":
        return f"{lb:g}", "n_in"
    return f"{lb:g}", f"{lw:g}"


def _lambda_latex(layer) -> str:
    lb, lw = _lambda_text(layer)
    return rf"{lb} + " + (r"n_{\mathrm{in}}" if lw == "n_in" else lw) + r"\,K"


@layer_map.register
def _(layer: Dense) -> LayerMap:
    lb, lw = _lambda_text(layer)
    text = (f"K' = C_b + C_W K = {layer.C_b:g} + {layer.C_W:g} K",
            f"Theta' = lambda_b + lambda_W K + C_W Theta = {lb} + {lw} K + {layer.C_W:g} Theta   "
            f"(param {layer.parameterization!r})")
    latex = rf"K \mapsto {layer.C_b:g} + {layer.C_W:g}\,K,\ \Theta \mapsto {_lambda_latex(layer)} + {layer.C_W:g}\,\Theta"
    return LayerMap(text, latex)


@layer_map.register
def _(layer: Conv) -> LayerMap:
    lb, lw = _lambda_text(layer)
    window = "x".join(map(str, layer.filter_shape))
    text = (f"K'(p, p') = C_b + C_W mean_q K(p + q, p' + q) = {layer.C_b:g} + {layer.C_W:g} mean_q K(p + q, p' + q)  "
            f"(q over the {window} filter offsets, padding {layer.padding!r}, strides {layer.step})",
            f"Theta'(p, p') = {lb} + {lw} mean_q K(p + q, p' + q) + {layer.C_W:g} mean_q Theta(p + q, p' + q)   "
            f"(param {layer.parameterization!r})")
    lam = _lambda_latex(layer).replace(r"\,K", r"\,\overline{K}_{pp'}")
    latex = (rf"K_{{pp'}} \mapsto {layer.C_b:g} + {layer.C_W:g}\,\overline{{K}}_{{pp'}},\ \Theta_{{pp'}} \mapsto "
             rf"{lam} + {layer.C_W:g}\,\overline{{\Theta}}_{{pp'}},\ "
             rf"\overline{{X}}_{{pp'}} = \tfrac{{1}}{{{layer.filter_size}}}\textstyle\sum_q X_{{p+q,\,p'+q}}")
    return LayerMap(text, latex)


# one rule per layer type, text and LaTeX (the rules of LayerNorm and the others are alike in shape)
@layer_map.register
def _(layer: AvgPool) -> LayerMap:
    window = "x".join(map(str, layer.window_shape))
    text = (f"K'(p, p') = mean_(q in W(p), q' in W(p')) K(q, q'), the same for Theta  (window {window}, strides "
            f"{layer.step}, padding {layer.padding!r}{', normalize_edges' if layer.normalize_edges else ''})",)
    latex = (r"K_{pp'} \mapsto \tfrac{1}{|W|^2}\textstyle\sum_{q \in W(p),\, q' \in W(p')} K_{qq'},\ "
             r"\Theta \text{ the same}")
    return LayerMap(text, latex)


@layer_map.register
def _(layer: Elementwise) -> LayerMap:
    from ..gaussian.derivation import plain_text
    from ..gaussian.display import display_text
    from ..recursions import activation_kernels

    latex = (r"K \mapsto E[s(u)s(v)],\ \Theta \mapsto E[s'(u)s'(v)]\,\Theta,\ s(x) = " + layer.activation.latex())
    if layer.is_identity:
        return layer_map(Identity())
    kern = activation_kernels(layer.activation)
    lines = [f"s(x) = {plain_text(layer.expr)}"]
    for title, e, tail in (("K' = E[s(u) s(v)]", kern.T, ""), ("Theta' = E[s'(u) s'(v)] Theta", kern.Tdot, " * Theta")):
        if e.is_closed_form:
            lines.append(f"{title} = ({display_text(e.expr, plain_text)}){tail}")
        else:
            lines.append(f"{title}: no closed form ({e.source})")
    return LayerMap(tuple(lines), latex)


# one rule per layer type, text and LaTeX (the rules of AvgPool and the others are alike in shape)
@layer_map.register
def _(layer: LayerNorm) -> LayerMap:
    text = (f"K'_ab = (K_ab - m_a m_b) / (s_a s_b), Theta'_ab = Theta_ab / (s_a s_b), "
            f"s_a^2 = K_aa - m_a^2 + {layer.eps:g}  (m_a the input's mean; 0 after a Dense layer)",)
    latex = (r"K_{ab} \mapsto \frac{K_{ab} - m_a m_b}{\sigma_a \sigma_b},\ "
             r"\Theta_{ab} \mapsto \frac{\Theta_{ab}}{\sigma_a\sigma_b}")
    return LayerMap(text, latex)


@layer_map.register
def _(layer: FanOut) -> LayerMap:
    return LayerMap((f"copies its input into {layer.num} branches (K, Theta unchanged)",),
                    rf"\text{{{layer.num} copies}}")


#: the maps that no layer argument enters: layer type -> (text, LaTeX)
CONSTANT_MAPS = {
    GlobalAvgPool: ("K' = mean_(p, p') K(p, p'), Theta' = mean_(p, p') Theta(p, p')  (over all position pairs)",
                    r"K \mapsto \tfrac{1}{P^2}\textstyle\sum_{p,p'} K_{pp'},\ \Theta \text{ the same}"),
    Flatten: ("K' = mean_p K(p, p), Theta' = mean_p Theta(p, p)  (same positions only)",
              r"K \mapsto \tfrac{1}{P}\textstyle\sum_{p} K_{pp},\ \Theta \text{ the same}"),
    FanInSum: ("K'_ab = sum_i K_i;ab + sum_(i != j) m_i;a m_j;b, Theta' = sum_i Theta_i  "
               "(branches through different Dense layers are independent)",
               r"K \mapsto \textstyle\sum_i K_i + \sum_{i \ne j} m_i m_j,\ \Theta \mapsto \sum_i \Theta_i"),
    FanInConcat: ("K' = sum_i (n_i / n) K_i, Theta' = sum_i (n_i / n) Theta_i  (n_i the branch widths, n their sum)",
                  r"K \mapsto \textstyle\sum_i \frac{n_i}{n} K_i,\ \Theta \mapsto \sum_i \frac{n_i}{n} \Theta_i"),
    Identity: ("K' = K, Theta' = Theta", r"K \mapsto K,\ \Theta \mapsto \Theta"),
}

for _type, (_text, _latex) in CONSTANT_MAPS.items():
    layer_map.register(_type, lambda layer, _map=LayerMap((_text,), _latex): _map)
