"""Defences (output perturbation now; detectors and active defences later); importing registers them."""

from . import output_perturbation  # noqa: F401  (registration side effects)
from . import same  # noqa: F401
from . import baselines, edm, oe  # noqa: F401  (detectors that use the victim itself)
from . import prada  # noqa: F401  (per-client detector)
from . import fusion  # noqa: F401  (benign-calibrated signal fusion)
from . import active  # noqa: F401  (reject / pow / misinformation, driven by a detector)
