"""Recovery attacks: does the forgetting survive quantization and a little relearning?"""

from fit_unlearn.attacks.quantize import quantize_attack, quantize_model
from fit_unlearn.attacks.relearn import relearn_attack

__all__ = ["quantize_attack", "quantize_model", "relearn_attack"]
