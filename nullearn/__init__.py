"""Natively unlearnable language models in JAX."""
