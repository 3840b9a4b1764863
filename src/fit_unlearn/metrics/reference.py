"""Forget Degree and Retain Utility against per-document gold references (spec section 4).

Every score below is a composite of per-document values, and every reference is the composite of the
gold models' values **on the same documents** (``reference.json`` keeps them per document):

* **F.D. (strict)** = closeness(F of the documents forgotten so far, the retain-only model's F on them): has
  each requested deletion happened?  No interpolation: a model that does nothing scores ~0 at every t.
* **F.D. (paper)** = closeness(F of the whole forget set, the mixture reference: forgotten documents at the
  retain-only model's values, the others at theta_0's).  This is the per-document form of the spec's
  F_0 + (F_T - F_0) t / T with T = the forget set's size (equal at t = 0 and t = T).
* **collateral** = closeness(F of the not-yet-requested forget documents, theta_0's F on them): documents
  must not be forgotten before they are asked for.
* **R.U.** = closeness(R on retain-eval, R_ref(t) = R_0 + (R_T - R_0) t / T).

closeness(v, ref) = max(0, 1 - |v / ref - 1|): 1 = indistinguishable from the reference; over- and
under-shooting are penalised alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ReferencePoints:
    """Whole-split composite scores of theta_0 (``*_0``) and of the retain-only model (``*_T``)."""

    forget_0: float
    retain_0: float
    forget_T: float
    retain_T: float

    def to_json(self) -> dict:
        return asdict(self)


def reference_at(start: float, end: float, t: int, T: int) -> float:
    """start + (end - start) * t / T, t clamped to [0, T]."""
    if T <= 0:
        raise ValueError("stream length T must be positive")
    return start + (end - start) * min(max(t, 0), T) / T


def closeness(value: float, ref: float) -> float:
    """max(0, 1 - |value / ref - 1|); when the reference is 0 the only match is 0 (1.0), else 0.0."""
    if ref == 0:
        return 1.0 if value == 0 else 0.0
    return max(0.0, 1.0 - abs(value / ref - 1.0))


def retain_utility(r_unl: float, ref: ReferencePoints, t: int, T: int) -> float:
    """closeness(R, R_0 + (R_T - R_0) t / T) on the same retain-eval documents."""
    return closeness(r_unl, reference_at(ref.retain_0, ref.retain_T, t, T))
