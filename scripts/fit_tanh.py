"""How the compiled kernel's float32 tanh was made: tanh(x) ~ x P(x²) / Q(x²) on |x| <= 9.

P and Q are of degree 4 in x² (Q(0) = 1), fitted for relative error by linearised least squares
(Sanathanan-Koerner: divide by the previous Q, refit) on Chebyshev points, with Lawson's
reweighting pushing the error towards equal ripple. Beyond 9, tanh rounds to ±1 in float32.
Prints the coefficients that ``lstmkit/kernels/cpu.py`` holds and the error of evaluating them in
float32 on a fine grid.

    python scripts/fit_tanh.py
"""

import numpy as np

BOUND = 9.0
DEGREE = 4  # of P and Q, in x²


def fit(iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    x = np.abs(np.cos(np.linspace(0, np.pi, 6000)) * BOUND / 2 + BOUND / 2) + 1e-6
    t, f = x * x, np.tanh(x)
    previous_q, weights = np.ones_like(x), np.ones_like(x)
    for _ in range(iterations):
        # x P(t) - f (Q(t) - 1) = f, relative to f and to the previous Q
        columns = np.concatenate(
            [
                x[:, None] * t[:, None] ** np.arange(DEGREE + 1),
                -f[:, None] * t[:, None] ** np.arange(1, DEGREE + 1),
            ],
            axis=1,
        )
        scale = weights / (previous_q * f)
        solution, *_ = np.linalg.lstsq(columns * scale[:, None], f * scale, rcond=None)
        p, q = solution[: DEGREE + 1], np.concatenate([[1.0], solution[DEGREE + 1 :]])
        previous_q = np.polyval(q[::-1], t)
        error = np.abs((x * np.polyval(p[::-1], t) / previous_q - f) / f)
        weights *= (error / error.mean()) ** 0.3
        weights /= weights.mean()
    return p, q


def evaluate32(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """As the kernel computes it: float32 Horner, clamped input and output."""
    x = np.clip(x.astype(np.float32), -BOUND, BOUND)
    t = x * x
    numerator, denominator = np.zeros_like(x), np.zeros_like(x)
    for a, b in zip(p[::-1].astype(np.float32), q[::-1].astype(np.float32), strict=True):
        numerator, denominator = numerator * t + a, denominator * t + b
    return np.clip(x * numerator / denominator, -1, 1)


def main() -> None:
    p, q = fit()
    print("P =", tuple(float(v) for v in p))
    print("Q =", tuple(float(v) for v in q))
    x = np.linspace(-12, 12, 2_400_001, dtype=np.float32)
    exact = np.tanh(x.astype(np.float64))
    error = np.abs(evaluate32(x, p, q) - exact)
    print(f"float32 evaluation on [-12, 12]: absolute error {error.max():.2e}, "
          f"relative {(error / np.maximum(np.abs(exact), 1e-30)).max():.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
