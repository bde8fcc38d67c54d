"""Studies: what sigprop measures and predicts on a model (analyze, theory, sweeps, phase diagrams, coordinate checks,
pretrained models). They build on blocks, probes and kernels; nothing below imports them."""
