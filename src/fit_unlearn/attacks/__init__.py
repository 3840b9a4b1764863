"""Recovery attacks: does the forgetting survive quantization and a little relearning?"""

from fit_unlearn.attacks.quantize import quantize_attack, quantize_model, quantize_run
from fit_unlearn.attacks.relearn import relearn_attack, relearn_run

__all__ = ["quantize_attack", "quantize_model", "quantize_run", "relearn_attack", "relearn_run"]
