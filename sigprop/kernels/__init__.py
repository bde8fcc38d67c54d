"""Pure math on kernels Sigma = X X^T / d: the per-layer kernel maps (`maps`) that every module's `kernel` uses."""
