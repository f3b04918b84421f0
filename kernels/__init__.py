"""Pallas GPU kernels for ShadowKV, each beside a plain-jnp reference of the same signature.

Installed as `shadowkv_jax.kernels` (this folder sits at the repository's top level).
"""
