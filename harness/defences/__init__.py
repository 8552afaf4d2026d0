"""Defences (output perturbation now; detectors and active defences later); importing registers them."""

from . import output_perturbation  # noqa: F401  (registration side effects)
