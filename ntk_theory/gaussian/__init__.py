"""Gaussian expectations E[f(u) g(v)] under (u, v) ~ N(0, [[k11, k12], [k12, k22]]): closed forms by rules, numerical otherwise."""
