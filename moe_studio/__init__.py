"""MoE Studio: see inside Mixture-of-Experts language models while they train."""
__version__ = "0.1.0"
