"""Low-rank factorization of the pre-RoPE keys: K_pre [N, Hkv*D] ~= A [N, r] @ W [r, Hkv*D].

One basis is shared by all KV heads of a layer (the factorization runs on the concatenated heads).
Two routes to the same rank-r subspace, both in fp32:
  * "svd":  K = U S V^T;  A = U_r,  W = S_r V_r^T   (the reference's choice);
  * "gram": eigendecomposition of K^T K ([Hkv*D]^2), top-r eigenvectors E;  A = K E,  W = E^T.
The Gram route needs two GEMMs and a small symmetric eigensolve instead of an SVD of a tall matrix.
In both, A @ W is the projection of K onto its top-r right singular subspace, so
||K - A W||_F^2 equals the discarded singular-value energy and is non-increasing in r.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def factorize_svd(k_pre: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """k_pre [N, M] -> (A [N, r], W [r, M]) in fp32."""
    u, s, vt = jnp.linalg.svd(k_pre.astype(jnp.float32), full_matrices=False)
    return u[:, :rank], s[:rank, None] * vt[:rank]


def factorize_gram(k_pre: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """k_pre [N, M] -> (A [N, r], W [r, M]) in fp32, via eigh of the [M, M] Gram matrix."""
    k32 = k_pre.astype(jnp.float32)
    gram = jnp.einsum("nm,np->mp", k32, k32, precision=jax.lax.Precision.HIGHEST)
    _, vecs = jnp.linalg.eigh(gram)  # ascending eigenvalues
    e = vecs[:, ::-1][:, :rank]  # [M, r], top-r
    a = jnp.einsum("nm,mr->nr", k32, e, precision=jax.lax.Precision.HIGHEST)
    return a, e.T


FACTORIZE = {"svd": factorize_svd, "gram": factorize_gram}


def factorize(k_pre: jax.Array, rank: int, method: str = "svd") -> tuple[jax.Array, jax.Array]:
    """Batched: k_pre [B, N, M] -> (A [B, N, r], W [B, r, M]); one basis per sequence."""
    fn = FACTORIZE[method]
    return jax.vmap(lambda x: fn(x, rank))(k_pre)


def subspace_agreement(w1: jax.Array, w2: jax.Array) -> jax.Array:
    """Mean squared cosine of the principal angles between the row spaces of W1, W2 [r, M] (1 = same)."""
    q1, _ = jnp.linalg.qr(w1.T.astype(jnp.float32))
    q2, _ = jnp.linalg.qr(w2.T.astype(jnp.float32))
    s = jnp.linalg.svd(q1.T @ q2, compute_uv=False)
    return jnp.mean(s ** 2)
