"""Forget Degree and Retain Utility against the interpolated gold reference (spec section 4).

F_ref(t) = F_0 + (F_T - F_0) * t / T  (theta_0 at t = 0, the retain-only model at t = T), likewise R_ref.
F.D. = max(0, 1 - |F_unl / F_ref - 1|),  R.U. = max(0, 1 - |R_unl / R_ref - 1|).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReferencePoints:
    """Composite scores of theta_0 (``*_0``) and of the retain-only model (``*_T``)."""

    forget_0: float
    retain_0: float
    forget_T: float
    retain_T: float

    def to_json(self) -> dict:
        return asdict(self)


def reference_at(start: float, end: float, t: int, T: int) -> float:
    if T <= 0:
        raise ValueError("stream length T must be positive")
    return start + (end - start) * min(max(t, 0), T) / T


def closeness(value: float, ref: float) -> float:
    """max(0, 1 - |value / ref - 1|); when the reference is 0 the only match is 0 (1.0), else 0.0."""
    if ref == 0:
        return 1.0 if value == 0 else 0.0
    return max(0.0, 1.0 - abs(value / ref - 1.0))


def forget_degree(f_unl: float, ref: ReferencePoints, t: int, T: int) -> float:
    return closeness(f_unl, reference_at(ref.forget_0, ref.forget_T, t, T))


def retain_utility(r_unl: float, ref: ReferencePoints, t: int, T: int) -> float:
    return closeness(r_unl, reference_at(ref.retain_0, ref.retain_T, t, T))
