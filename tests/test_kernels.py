"""Pallas kernels against their jnp references: interpreted on CPU (CI), compiled on a GPU.

On a GPU machine, `SHADOWKV_KERNELS_COMPILED=1 pytest tests/test_kernels.py` runs the same cases
compiled through the Triton lowering.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shadowkv_jax.kernels.decode_attention import combine_splits
from shadowkv_jax.kernels.sparse_attention import (combine, exact_partials_reference, rope_inv_freq_full,
                                                   sparse_attention_partials, plan,
                                                   sparse_attention_partials_reference)
from shadowkv_jax.kernels.top_k import top_k_indices, top_k_indices_reference

COMPILED = os.environ.get("SHADOWKV_KERNELS_COMPILED") == "1"
INTERPRET = not COMPILED


def make_inputs(seed, *, batch, kv_heads, groups, head_dim, chunk_size, rank, selected, chunks_total,
                dtype, layers=2):
    rng = np.random.default_rng(seed)
    n = chunks_total * chunk_size
    a = rng.standard_normal((layers, batch, n, rank)) / np.sqrt(rank)
    w = rng.standard_normal((batch, kv_heads, rank, head_dim))
    q = rng.standard_normal((batch, kv_heads, groups, head_dim))
    q = q / np.linalg.norm(q, axis=-1, keepdims=True) * 2.0  # bounded logits
    values = rng.standard_normal((layers, batch, kv_heads, chunks_total, chunk_size, head_dim))
    chunks = np.stack([[rng.choice(chunks_total, selected, replace=False) for _ in range(kv_heads)]
                       for _ in range(batch)]).astype(np.int32)
    inv = rope_inv_freq_full(1.0 / (10000.0 ** (np.arange(0, head_dim, 2) / head_dim)))
    cast = lambda x: jnp.asarray(x, dtype)
    return cast(q), cast(a), cast(w), jnp.asarray(chunks), cast(values), jnp.asarray(inv)


def attend(partials, q):
    """Normalise partials alone (one empty exact segment) -> [B, Hkv, G, D]."""
    b, h, _, d = q.shape
    empty = [(jnp.zeros((b, h, 1, d), q.dtype), jnp.zeros((b, h, 1, d), q.dtype), jnp.zeros((b, 1, 1), bool))]
    return np.asarray(combine(partials, q, empty))


CASES = [  # (G, D, c, rank, selected chunks, total chunks, batch, block_tokens)
    (1, 64, 4, 16, 13, 40, 2, 32),
    (4, 128, 8, 160, 37, 90, 2, 64),
    (7, 64, 16, 16, 5, 12, 3, 32),
    (8, 128, 8, 160, 21, 50, 2, 64),
    (4, 64, 4, 160, 50, 70, 2, 64),
    (8, 64, 16, 16, 9, 20, 2, 16),
    (4, 128, 8, 160, 37, 90, 2, 8),  # asks for one-chunk blocks: run as 16 tokens (MIN_BLOCK_TOKENS)
    (4, 128, 8, 160, 37, 90, 2, 128),  # 16 chunks per block, the last block of each split partly padding
]


def _check_fp32(seed, g, d, c, rank, k, n_c, batch, block, **launch):
    q, a, w, chunks, values, inv = make_inputs(seed, batch=batch, kv_heads=2, groups=g, head_dim=d,
                                               chunk_size=c, rank=rank, selected=k, chunks_total=n_c,
                                               dtype=jnp.float32)
    layer = jnp.int32(1)
    got = sparse_attention_partials(q, a, w, chunks, values, inv, layer, chunk_size=c, block_tokens=block,
                                    num_splits=2, interpret=INTERPRET, **launch)
    want = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, chunk_size=c)
    np.testing.assert_allclose(attend(got, q), attend(want, q), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("case", CASES)
def test_partials_match_reference_fp32(case):
    _check_fp32(0, *case)


@pytest.mark.parametrize("case", [CASES[1], CASES[5]])
def test_w_loaded_once_per_program_matches_reference(case):
    _check_fp32(7, *case, w_once=True)


@pytest.mark.parametrize("case", [CASES[1], CASES[2]])
def test_w_of_every_layer_is_read_in_place_at_the_layer(case):
    """W given for all layers [L, B, Hkv, r, D] (as the decode step passes it: no copy of the layer's slice) gives
    the same partials, bit for bit, as that layer's W [B, Hkv, r, D]; both match the reference."""
    g, d, c, rank, k, n_c, batch, block = case
    q, a, w, chunks, values, inv = make_inputs(3, batch=batch, kv_heads=2, groups=g, head_dim=d, chunk_size=c,
                                               rank=rank, selected=k, chunks_total=n_c, dtype=jnp.float32, layers=3)
    w_all = jnp.stack([w * 0.5, -w, w])  # layer 1's W differs from the others
    run = lambda w_in: sparse_attention_partials(q, a, w_in, chunks, values, inv, jnp.int32(1), chunk_size=c,
                                                 block_tokens=block, num_splits=2, interpret=INTERPRET)
    stacked, one = run(w_all), run(w_all[1])
    for x, y in zip(stacked, one):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    want = sparse_attention_partials_reference(q, a, w_all, chunks, values, inv, jnp.int32(1), chunk_size=c)
    np.testing.assert_allclose(attend(stacked, q), attend(want, q), atol=2e-4, rtol=2e-4)
    with pytest.raises(ValueError, match=rf"w \(2, {rank}, {d}\) must be \[L, {batch}, 2, {rank}, {d}\]"):
        run(w_all[1, 0])


def test_traced_inv_freq_is_refused_with_the_reason():
    """The RoPE tables are built from inv_freq when the call is traced: a traced inv_freq cannot give them."""
    q, a, w, chunks, values, inv = make_inputs(0, batch=1, kv_heads=1, groups=1, head_dim=64, chunk_size=8,
                                               rank=16, selected=2, chunks_total=4, dtype=jnp.float32)
    with pytest.raises(TypeError, match="inv_freq must be a concrete array"):
        jax.jit(lambda f: sparse_attention_partials(q, a, w, chunks, values, f, jnp.int32(0), chunk_size=8,
                                                    interpret=True))(inv)


def _bf16_errors(args32, layer, c, **launch):
    """(the kernel's bf16 partials, its error, the bf16 reference's error), both errors against the fp32 reference."""
    q, a, w, chunks, values, inv = args32
    cast = lambda x: x.astype(jnp.bfloat16)
    args16 = (cast(q), cast(a), cast(w), chunks, cast(values), inv)
    truth = attend(sparse_attention_partials_reference(*args32, layer, chunk_size=c), q)
    ref16 = attend(sparse_attention_partials_reference(*args16, layer, chunk_size=c), args16[0])
    got = sparse_attention_partials(*args16, layer, chunk_size=c, interpret=INTERPRET, **launch)
    return got, np.abs(attend(got, args16[0]) - truth).max(), np.abs(ref16 - truth).max()


@pytest.mark.parametrize("g,d,c,rank,k,n_c,batch,block", CASES[1:4])
def test_bf16_error_within_reference_error(g, d, c, rank, k, n_c, batch, block):
    """bf16 kernel error against the fp32 reference, relative to the bf16 reference's own error."""
    args32 = make_inputs(1, batch=batch, kv_heads=2, groups=g, head_dim=d, chunk_size=c, rank=rank,
                         selected=k, chunks_total=n_c, dtype=jnp.float32)
    _, kernel_err, ref_err = _bf16_errors(args32, jnp.int32(0), c, block_tokens=block)
    assert kernel_err <= 1.5 * ref_err + 1e-6, (kernel_err, ref_err)


@pytest.mark.parametrize("k,n_c", [(128, 150), (240, 260)], ids=["16_blocks_4_splits", "30_blocks_8_splits"])
def test_bf16_device_values_launch_within_reference_error(k, n_c):
    """The decode step's launch with device values (64-token blocks, 4 warps, 3 stages; device_values_launch's
    splits: 4 of 4 blocks at 65,536 tokens' selection, 8 with a short last one at 122,880's), in bf16."""
    from shadowkv_jax.kernels.sparse_attention import device_values_launch

    c = 8
    args32 = make_inputs(2, batch=1, kv_heads=2, groups=4, head_dim=128, chunk_size=c, rank=160, selected=k,
                         chunks_total=n_c, dtype=jnp.float32)
    got, kernel_err, ref_err = _bf16_errors(args32, jnp.int32(1), c, **device_values_launch(k, c))
    assert got[0].shape[2] == {128: 4, 240: 8}[k]
    assert kernel_err <= 1.5 * ref_err + 1e-6, (kernel_err, ref_err)


@pytest.mark.parametrize("d,rotary,g", [(128, 64, 4), (64, 32, 7)])
def test_partial_rotary_matches_reference(d, rotary, g):
    """Partial rotary (GLM-4: RoPE on the first half of each head): the kernel reconstructs the rotated halves
    and the unrotated dims as separate pieces (head_parts); it must match the reference, which rotates the first
    `rotary_dim` dims of whole keys."""
    c, k, n_c = 8, 21, 50
    q, a, w, chunks, values, _ = make_inputs(5, batch=2, kv_heads=2, groups=g, head_dim=d, chunk_size=c,
                                             rank=160, selected=k, chunks_total=n_c, dtype=jnp.float32)
    inv = jnp.asarray(rope_inv_freq_full(1.0 / (10000.0 ** (np.arange(0, rotary, 2) / rotary)), d))
    layer = jnp.int32(1)
    got = sparse_attention_partials(q, a, w, chunks, values, inv, layer, chunk_size=c, block_tokens=32,
                                    num_splits=2, rotary_dim=rotary, interpret=INTERPRET)
    want = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, chunk_size=c,
                                               rotary_dim=rotary)
    full = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, chunk_size=c)
    assert np.abs(attend(full, q) - attend(want, q)).max() > 1e-2  # the unrotated dims matter here
    np.testing.assert_allclose(attend(got, q), attend(want, q), atol=2e-4, rtol=2e-4)


def _segments(seed, layers, batch, kv_heads, d, sizes, dtype):
    """Exact segments [L, B, Hkv, n, D] of the given row counts; the first and last with per-sequence valid rows."""
    rng = np.random.default_rng(seed)
    segs = []
    for i, n in enumerate(sizes):
        k, v = (jnp.asarray(rng.standard_normal((layers, batch, kv_heads, n, d)), dtype) for _ in range(2))
        valid = None if 0 < i < len(sizes) - 1 else jnp.asarray(rng.integers(0, n + 1, batch), jnp.int32)
        segs.append((k, v, valid))
    return segs


@pytest.mark.parametrize("reuse", [False, True])
def test_exact_segments_in_the_launch_match_the_combine(reuse):
    """`exact` segments read in the kernel (one program per (b, h) for all of them, in place at the layer) must give
    what `combine` gives with the same segments as layer slices and masks, and match the jnp reference. Row counts
    straddle the exact blocks (EXACT_BLOCK_TOKENS = 64: 66 rows in two); one segment is empty, valid counts
    include 0 and the whole segment."""
    c, k, n_c, batch, g, d = 8, 21, 50, 3, 4, 128
    q, a, w, chunks, values, inv = make_inputs(8, batch=batch, kv_heads=2, groups=g, head_dim=d, chunk_size=c,
                                               rank=160, selected=k, chunks_total=n_c, dtype=jnp.float32)
    segs = _segments(9, 2, batch, 2, d, (22, 384 // 8, 0, 66), jnp.float32)
    segs[0] = (segs[0][0], segs[0][1], jnp.asarray([0, 22, 5], jnp.int32))
    layer = jnp.int32(1)
    reuse_args = ()
    if reuse:  # last step's selection: the same chunks but one, its cache the true values (so hits read right)
        previous = chunks.at[:, :, 0].set((chunks[:, :, 0] + 1) % n_c)
        empty = jnp.zeros((batch, 2, k, c, d), jnp.float32)
        cache = sparse_attention_partials_reference(q, a, w, previous, values, inv, layer, empty, previous,
                                                    chunk_size=c)[3]
        reuse_args = (cache, previous)
    got = sparse_attention_partials(q, a, w, chunks, values, inv, layer, *reuse_args, chunk_size=c,
                                    block_tokens=32, num_splits=2, exact=tuple(segs), interpret=INTERPRET)
    assert got[0].shape[2] == 2 + 1  # two splits, then one for the segments
    plain = sparse_attention_partials(q, a, w, chunks, values, inv, layer, *reuse_args, chunk_size=c,
                                      block_tokens=32, num_splits=2, interpret=INTERPRET)
    np.testing.assert_array_equal(np.asarray(got[0][:, :, :2]), np.asarray(plain[0]))
    if reuse:
        np.testing.assert_array_equal(np.asarray(got[3]), np.asarray(plain[3]))
    at = lambda x: x[1]
    masks = [jnp.ones((1, 1, kk.shape[3]), bool) if valid is None
             else (jnp.arange(kk.shape[3])[None, :] < valid[:, None])[:, None] for kk, _, valid in segs]
    by_combine = np.asarray(combine(plain[:3], q, [(at(kk), at(vv), mm) for (kk, vv, _), mm in zip(segs, masks)]))
    in_launch = np.asarray(combine_splits(got[:3]))
    np.testing.assert_allclose(in_launch, by_combine, atol=2e-5, rtol=2e-5)
    ref = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, chunk_size=c, exact=tuple(segs))
    np.testing.assert_allclose(in_launch, np.asarray(combine_splits(ref[:3])), atol=2e-4, rtol=2e-4)
    # the segments' own partial: one softmax carried through all three, as the reference's second split
    seg_ref = exact_partials_reference(q, segs, layer)
    top = np.asarray(seg_ref[1])[:, :, 0]
    np.testing.assert_allclose(np.asarray(got[1][:, :, 2]), top, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(np.asarray(got[2][:, :, 2]), np.asarray(seg_ref[2])[:, :, 0], rtol=2e-4)
    np.testing.assert_allclose(np.asarray(got[0][:, :, 2]), np.asarray(seg_ref[0])[:, :, 0], rtol=2e-4, atol=2e-4)


def test_exact_segments_of_the_wrong_shape_are_refused():
    q, a, w, chunks, values, inv = make_inputs(0, batch=2, kv_heads=2, groups=4, head_dim=64, chunk_size=8,
                                               rank=16, selected=3, chunks_total=8, dtype=jnp.float32)
    run = lambda seg: sparse_attention_partials(q, a, w, chunks, values, inv, jnp.int32(0), chunk_size=8,
                                                exact=(seg,), interpret=True)
    k = jnp.zeros((2, 2, 2, 10, 64), jnp.float32)
    with pytest.raises(ValueError, match=r"exact\[0\]: k \(2, 2, 2, 10, 64\) and v \(2, 3, 2, 10, 64\)"):
        run((k, jnp.zeros((2, 3, 2, 10, 64), jnp.float32), None))
    with pytest.raises(ValueError, match="must have the query's dtype float32"):
        run((k.astype(jnp.bfloat16), k.astype(jnp.bfloat16), None))
    with pytest.raises(ValueError, match=r"valid must be \[2\] rows per sequence"):
        run((k, k, jnp.zeros((3,), jnp.int32)))
    with pytest.raises(ValueError, match="must be \\(k, v, valid\\)"):
        run((k, k))


def test_head_pieces_the_compiled_kernel_cannot_take_are_refused():
    q, a, w, chunks, values, inv = make_inputs(0, batch=1, kv_heads=1, groups=1, head_dim=64, chunk_size=8,
                                               rank=16, selected=3, chunks_total=8, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"rotary_dim=16 splits into pieces of \[8, 8, 48\]"):
        sparse_attention_partials(q, a, w, chunks, values, inv, jnp.int32(0), chunk_size=8, rotary_dim=16)
    with pytest.raises(ValueError, match="rotary_dim=7 must be even"):
        sparse_attention_partials(q, a, w, chunks, values, inv, jnp.int32(0), chunk_size=8, rotary_dim=7,
                                  interpret=True)


def _attention_float64(q, a, w, chunks, values, inv, layer, c):
    """The kernel's computation in float64 with exact RoPE angles: the yardstick for fp32 rounding."""
    f64 = lambda x: np.asarray(x, np.float64)
    q, a, w, values, inv = f64(q), f64(a)[layer], f64(w), f64(values)[layer], f64(inv)
    chunks = np.asarray(chunks)
    d = q.shape[-1]
    out = np.zeros(q.shape)
    for b, h in np.ndindex(*chunks.shape[:2]):
        pos = (chunks[b, h][:, None] * c + np.arange(c)).reshape(-1)
        k_pre = a[b, pos] @ w[b, h]
        rot = np.concatenate([-k_pre[:, d // 2:], k_pre[:, :d // 2]], axis=1)
        angle = pos[:, None] * inv[None, :]
        keys = k_pre * np.cos(angle) + rot * np.sin(angle)
        s = q[b, h] @ keys.T
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[b, h] = (p / p.sum(axis=1, keepdims=True)) @ values[b, h, chunks[b, h]].reshape(-1, d)
    return out


def test_rope_at_long_positions_is_exact_to_fp32():
    """The kernel takes cos/sin from two tables by angle addition (rope_tables, built in float64); at
    positions near 131K its output must match exact (float64) RoPE to fp32 rounding, while the reference's
    cos(fp32(p * f)) is off by its rounding of the angle (which shows these positions are a real test)."""
    c, n_c = 8, 16384
    q, a, w, _, values, inv = make_inputs(0, batch=1, kv_heads=2, groups=4, head_dim=64, chunk_size=c, rank=16,
                                          selected=24, chunks_total=n_c, dtype=jnp.float32, layers=1)
    chunks = jnp.asarray(np.sort(n_c - 1 - np.arange(48).reshape(1, 2, 24), -1), jnp.int32)  # the last 48 chunks
    layer = jnp.int32(0)
    exact = _attention_float64(q, a, w, chunks, values, inv, 0, c)
    got = attend(sparse_attention_partials(q, a, w, chunks, values, inv, layer, chunk_size=c, interpret=INTERPRET), q)
    ref = attend(sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, chunk_size=c), q)
    err, ref_err = np.abs(got - exact).max(), np.abs(ref - exact).max()
    assert ref_err > 1e-4, ref_err  # fp32 angles at these positions are visibly off
    assert err < 2e-5, (err, ref_err)  # 8e-7 interpreted on CPU


def test_blocks_are_whole_chunks_of_at_least_16_tokens():
    assert plan(37, 8, block_tokens=8)[0] == 16  # 8-token blocks computed wrong results compiled
    assert plan(37, 32, block_tokens=16)[0] == 32  # never less than a chunk
    block, per_split, splits, k_pad = plan(37, 8, block_tokens=16, num_splits=4)
    assert (block, splits) == (16, 4) and per_split * splits * 2 == k_pad >= 37
    assert plan(37, 8, block_tokens=16, num_splits=64)[2] == 19  # 19 blocks: no split without one
    # 9 blocks asked in 8 splits: 5 of 2 blocks (the last one runs 1), not 8 with 3 splits of padding alone
    assert plan(9, 16, block_tokens=16, num_splits=8)[1:] == (2, 5, 10)
    assert plan(240, 8, block_tokens=64, num_splits=8)[1:] == (4, 8, 256)  # the step at 122,880: 30 blocks


def test_device_values_launch_keeps_splits_of_at_least_4_blocks():
    """The step's launch with device values: 8 splits, fewer when a split would hold under 4 blocks of 64 tokens."""
    from shadowkv_jax.kernels.sparse_attention import DEVICE_VALUES_LAUNCH, device_values_launch

    at = lambda k, c=8: device_values_launch(k, c)["num_splits"]
    assert at(240) == 8 and plan(240, 8, 64, at(240))[1:3] == (4, 8)  # 122,880 tokens: 30 blocks, unchanged
    assert at(128) == 4 and plan(128, 8, 64, at(128))[1:3] == (4, 4)  # 65,536: 16 blocks in 4 splits, not 8 of 2
    assert at(100) == 4 and plan(100, 8, 64, at(100))[1:3] == (4, 4)  # 13 blocks: the last split runs 1
    assert at(3) == 1 and at(1000) == 8  # a block or two: one split; long selections: the cap
    assert at(64, 16) == 4  # 16-token chunks: 4 chunks a block, 16 blocks
    rest = {k: v for k, v in device_values_launch(240, 8).items() if k != "num_splits"}
    assert rest == {k: v for k, v in DEVICE_VALUES_LAUNCH.items() if k != "num_splits"}


def test_combine_equals_one_softmax_over_everything():
    """Splitting keys into kernel partials + exact segments gives the same softmax as one pass."""
    rng = np.random.default_rng(3)
    b, h, g, d, n1, n2 = 2, 2, 3, 16, 20, 7
    q = jnp.asarray(rng.standard_normal((b, h, g, d)), jnp.float32)
    k1, v1 = (jnp.asarray(rng.standard_normal((b, h, n1, d)), jnp.float32) for _ in range(2))
    k2, v2 = (jnp.asarray(rng.standard_normal((b, h, n2, d)), jnp.float32) for _ in range(2))
    mask2 = jnp.asarray(rng.random((b, 1, n2)) > 0.3)
    hi = jax.lax.Precision.HIGHEST
    s1 = jnp.einsum("bhgd,bhnd->bhgn", q, k1, precision=hi)
    m = s1.max(-1)
    p = jnp.exp(s1 - m[..., None])
    partials = (jnp.einsum("bhgn,bhnd->bhgd", p, v1, precision=hi)[:, :, None], m[:, :, None],
                p.sum(-1)[:, :, None])
    got = combine(partials, q, [(k2, v2, mask2)])
    s2 = jnp.einsum("bhgd,bhnd->bhgn", q, k2, precision=hi)
    s = jnp.concatenate([s1, jnp.where(mask2[:, :, None], s2, -1e30)], -1)
    want = jnp.einsum("bhgn,bhnd->bhgd", jax.nn.softmax(s, -1), jnp.concatenate([v1, v2], 2), precision=hi)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_unsupported_shapes_are_refused():
    q, a, w, chunks, values, inv = make_inputs(0, batch=1, kv_heads=1, groups=1, head_dim=64, chunk_size=8,
                                               rank=24, selected=3, chunks_total=8, dtype=jnp.float32)
    with pytest.raises(ValueError, match="rank=24 must be a multiple of 16"):
        sparse_attention_partials(q, a, w, chunks, values, inv, jnp.int32(0), chunk_size=8, interpret=True)


REUSE_CASES = [  # (G, D, c, rank, selected chunks, total chunks, batch, block_tokens)
    (4, 64, 8, 16, 13, 40, 2, 32),
    (8, 128, 8, 160, 21, 50, 2, 64),
    (1, 64, 4, 16, 9, 30, 3, 16),
]


@pytest.mark.parametrize("g,d,c,rank,k,n_c,batch,block", REUSE_CASES)
def test_value_reuse_reads_hits_from_the_cache(g, d, c, rank, k, n_c, batch, block):
    """Hits come from the device cache (host values of hit chunks are poisoned to prove it), misses
    from `values`; the output equals the reference and the new cache holds this step's values."""
    q, a, w, chunks, values, inv = make_inputs(2, batch=batch, kv_heads=2, groups=g, head_dim=d,
                                               chunk_size=c, rank=rank, selected=k, chunks_total=n_c,
                                               dtype=jnp.float32)
    layer = jnp.int32(1)
    rng = np.random.default_rng(5)
    ch = np.asarray(chunks)
    # previous selection: about half of this step's chunks (shuffled slots) plus unrelated chunks
    prev = np.full_like(ch, -1)
    for b in range(batch):
        for h in range(2):
            keep = rng.permutation(ch[b, h])[: k // 2]
            others = rng.permutation(np.setdiff1d(np.arange(n_c), ch[b, h]))[: k - len(keep)]
            prev[b, h] = rng.permutation(np.concatenate([keep, others]))
    vals = np.asarray(values)
    cache = vals[1][np.arange(batch)[:, None, None], np.arange(2)[None, :, None], np.maximum(prev, 0)]
    poisoned = vals.copy()
    hit_mask = np.isin(ch, prev).any() and [(b, h, x) for b in range(batch) for h in range(2)
                                            for x in ch[b, h] if x in prev[b, h]]
    assert hit_mask, "the case must contain hits"
    for b, h, x in hit_mask:
        poisoned[1, b, h, x] = 1e4  # a kernel that read hits from host memory would be far off
    got = sparse_attention_partials(q, a, w, chunks, jnp.asarray(poisoned), inv, layer, jnp.asarray(cache),
                                    jnp.asarray(prev), chunk_size=c, block_tokens=block, num_splits=2,
                                    interpret=INTERPRET)
    want = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, jnp.asarray(cache),
                                               jnp.asarray(prev), chunk_size=c)
    np.testing.assert_allclose(attend(got[:3], q), attend(want[:3], q), atol=2e-4, rtol=2e-4)
    np.testing.assert_array_equal(np.asarray(got[3]), np.asarray(want[3]))


@pytest.mark.parametrize("reuse", [False, True], ids=["plain", "reuse"])
@pytest.mark.parametrize("value_row,extra", [(0, 2), (3, 0), (1, 1)])
def test_value_row_reads_the_sequences_rows_of_a_larger_value_array(value_row, extra, reuse):
    """Micro-batches share one value array: with value_row, sequence i reads row value_row + i. The other
    rows hold 1e4, so a kernel reading any of them would be far off."""
    batch, c, k, n_c = 2, 8, 21, 50
    q, a, w, chunks, values, inv = make_inputs(3, batch=batch, kv_heads=2, groups=4, head_dim=128, chunk_size=c,
                                               rank=160, selected=k, chunks_total=n_c, dtype=jnp.float32)
    big = np.full((2, value_row + batch + extra) + values.shape[2:], 1e4, np.float32)
    big[:, value_row:value_row + batch] = np.asarray(values)
    layer = jnp.int32(1)
    reuse_args = ()
    if reuse:  # no hits: every chunk comes from `values`
        prev = jnp.full(chunks.shape, -1, jnp.int32)
        reuse_args = (jnp.zeros((batch, 2, k, c, 128), jnp.float32), prev)
    got = sparse_attention_partials(q, a, w, chunks, jnp.asarray(big), inv, layer, *reuse_args, chunk_size=c,
                                    block_tokens=32, num_splits=2, interpret=INTERPRET, value_row=value_row)
    want = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, *reuse_args, chunk_size=c)
    np.testing.assert_allclose(attend(got[:3], q), attend(want[:3], q), atol=2e-4, rtol=2e-4)
    ref_big = sparse_attention_partials_reference(q, a, w, chunks, jnp.asarray(big), inv, layer, *reuse_args,
                                                  chunk_size=c, value_row=value_row)
    np.testing.assert_allclose(attend(ref_big[:3], q), attend(want[:3], q), atol=1e-5, rtol=1e-5)
    if reuse:
        np.testing.assert_array_equal(np.asarray(got[3]), np.asarray(want[3]))
    with pytest.raises(ValueError, match=rf"value_row={value_row + extra + 1} does not hold 2 sequences"):
        sparse_attention_partials(q, a, w, chunks, jnp.asarray(big), inv, layer, chunk_size=c, interpret=True,
                                  value_row=value_row + extra + 1)


@pytest.mark.parametrize("reuse", [False, True], ids=["plain", "reuse"])
def test_after_and_stream_change_nothing_but_the_order(reuse):
    """`after` is an array or pytree of arrays the kernel never reads (it orders the kernel after their
    writers), `stream` launches the kernel as an XLA call on a second GPU stream, and `return_prepared`
    hands back the launch's prepared operands (to pass on as another kernel's `after`): the partials and
    the new cache are the same as without them, bit for bit."""
    batch, c, k = 3, 8, 21
    q, a, w, chunks, values, inv = make_inputs(4, batch=batch, kv_heads=2, groups=4, head_dim=128, chunk_size=c,
                                               rank=160, selected=k, chunks_total=50, dtype=jnp.float32)
    reuse_args = ()
    if reuse:  # half the chunks were selected last step: hits from the cache
        prev = jnp.concatenate([chunks[..., ::2], jnp.full(chunks.shape[:-1] + (k - (k + 1) // 2,), -1, jnp.int32)],
                               axis=-1)
        reuse_args = (jax.random.normal(jax.random.key(5), (batch, 2, k, c, 128)), prev)
    run = lambda **kw: sparse_attention_partials(q, a, w, chunks, values, inv, jnp.int32(1), *reuse_args,
                                                 chunk_size=c, block_tokens=32, num_splits=2,
                                                 interpret=INTERPRET, **kw)
    plain, ordered = run(), run(after=jnp.full((batch, 7), jnp.nan))
    held, prepared = jax.jit(lambda after: run(after=after, stream=1, return_prepared=True))(plain[1])
    assert len(prepared) == (4 if reuse else 3) and all(isinstance(x, jax.Array) for x in prepared)
    after_held = jax.jit(lambda after: run(after=after, stream=1))((plain[1], prepared))  # a pytree
    assert len(ordered) == len(plain) == len(held) == len(after_held) == (4 if reuse else 3)
    for x, *others in zip(plain, ordered, held, after_held):
        for y in others:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_hit_slots():
    from shadowkv_jax.kernels.sparse_attention import hit_slots

    chunks = jnp.asarray([[[4, 9, 2, 7]]], jnp.int32)
    prev = jnp.asarray([[[7, 3, 4, -1]]], jnp.int32)
    assert np.asarray(hit_slots(chunks, prev)).tolist() == [[[2, -1, -1, 0]]]


DECODE_CASES = [  # (G, D, capacity, valid lengths, block, splits)
    (4, 128, 256, [256, 70], 64, None),
    (1, 64, 192, [1, 130], 64, 2),
    (7, 64, 128, [100, 128, 5], 32, 3),
    (8, 128, 512, [333, 64], 64, 8),
]


@pytest.mark.parametrize("g,d,cap,valid,block,splits", DECODE_CASES)
def test_decode_attention_matches_reference(g, d, cap, valid, block, splits):
    from shadowkv_jax.kernels.decode_attention import decode_attention_partials, decode_attention_reference

    rng = np.random.default_rng(7)
    b, hkv, layers = len(valid), 2, 3
    q = rng.standard_normal((b, hkv, g, d))
    q = jnp.asarray(q / np.linalg.norm(q, axis=-1, keepdims=True) * 3.0, jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((layers, b, hkv, cap, d)), jnp.float32) for _ in range(2))
    # keys past each length are huge: attending to any of them would dominate the output
    poison = (np.arange(cap)[None, :] >= np.asarray(valid)[:, None])[None, :, None, :, None]
    k = jnp.where(poison, 1e3, k)
    lens, layer = jnp.asarray(valid, jnp.int32), jnp.int32(2)
    got = combine_splits(decode_attention_partials(q, k, v, lens, layer, block=block, num_splits=splits,
                                                   interpret=INTERPRET))
    want = decode_attention_reference(q, k, v, lens, layer)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("rows,n,k,tile", [
    (3, 100, 7, 4096),      # one tile, row shorter than the block
    (10, 1000, 240, 256),   # several tiles, the last one ragged; the decode step's k
    (2, 300, 50, 64),
    (4, 37, 37, 16),        # k = n: every element
    (2, 15315, 240, 4096),  # Llama-3.1-8B at 122,880 tokens: selectable chunks per KV head, in tiles
    (2, 15315, 240, 16384),  # the same held in registers (the default)
])
def test_top_k_kernel_picks_the_same_set(rows, n, k, tile):
    """Same set as lax.top_k, ties at the threshold to the lower index, negative scores ranked."""
    rng = np.random.default_rng(n)
    x = rng.random((rows, n)).astype(np.float32) * 1e-3  # softmax-like probabilities
    x[:, ::7] = -1.0  # padding chunks (below any probability), tied with one another
    x[:, 3:9] = np.sort(x[0])[-k // 2] if n > 9 else 0.5  # ties straddling the threshold
    x[1, :] = np.float32(2e-4)  # a row of nothing but ties
    got = top_k_indices(jnp.asarray(x), k, tile=tile, interpret=INTERPRET)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(top_k_indices_reference(jnp.asarray(x), k)))


def test_top_k_kernel_refuses_k_beyond_the_row():
    with pytest.raises(ValueError, match="k=9 must be in"):
        top_k_indices(jnp.zeros((2, 8)), 9, interpret=True)
    # the slots' packed prefix sum counts ties in 16 bits of an int32: a tile of 2^15 keys could overflow it
    with pytest.raises(ValueError, match="a tile of 32768 keys is over the 32,767"):
        top_k_indices(jnp.zeros((1, 40000)), 5, tile=1 << 15, interpret=True)


@pytest.mark.parametrize("tiles", [1, 3])
def test_threshold_search_finds_the_top_k_anywhere_in_int32(tiles):
    """The kernels' threshold search (kth_largest_key's counting passes), as plain jnp, over sortable keys spread
    over all of int32 (both signs, the extremes, ties) and over softmax-like keys that share their top bits, for
    k from 1 to the row, in one tile and in several: the keys above t and the first ties_wanted keys equal to t
    are exactly the top k (lax.top_k's set, ties to the lower index). Where the search stops early t is below the
    k-th key; where the (k+1)-th key equals the k-th it is that key."""
    from shadowkv_jax.kernels.top_k import threshold

    rng = np.random.default_rng(tiles)
    n = 96
    spread = rng.integers(-2 ** 31, 2 ** 31, size=n, dtype=np.int64).astype(np.int32)
    spread[:6] = [-2 ** 31, -2 ** 31 + 1, 2 ** 31 - 1, 2 ** 31 - 2, 0, -1]
    spread[6:12] = spread[40]  # ties
    spread[12:20] = rng.integers(-3, 3, size=8)  # keys a step apart
    # probabilities as sortable keys: one sign, an exponent or two, ties and keys a step apart
    close = (np.float32(1e-3) * (1 + rng.random(n).astype(np.float32))).view(np.int32)
    close[20:30] = close[50]
    close[30:34] = close[60] + np.arange(4)
    tile = n // tiles
    search = jax.jit(lambda x, k: threshold(lambda i: jax.lax.dynamic_slice_in_dim(x, i * tile, tile), tiles, k),
                     static_argnums=1)
    for row in (spread, close):
        order = np.argsort(-row.astype(np.int64), kind="stable")  # descending, ties by index
        for k in [1, 2, 5, 7, 13, 40, 47, 95, 96]:
            t, ties_wanted = map(int, search(jnp.asarray(row), k))
            kth = int(row[order[k - 1]])
            assert ties_wanted == k - int((row > t).sum()), (k, t)
            assert 0 <= ties_wanted <= int((row == t).sum()), (k, t, ties_wanted)
            taken = set(np.flatnonzero(row > t)) | set(np.flatnonzero(row == t)[:ties_wanted])
            assert taken == set(order[:k]), (k, t)
            if k < n and row[order[k]] == kth:  # ties across the k-th key: no early stop
                assert t == kth, (k, t, kth)


@pytest.mark.parametrize("b,hkv,g,n,k,tile", [
    (2, 2, 4, 100, 7, 16384),   # one tile, row shorter than the block
    (2, 3, 3, 1000, 240, 256),  # several tiles (keys staged), the last one ragged; the decode step's k
    (1, 2, 1, 300, 50, 64),     # a group of one
    (2, 1, 4, 37, 37, 16),      # k = n: every slot
    (1, 2, 16, 500, 64, 16384),  # GLM-4-9B's group of 16 query heads per KV head
    (1, 2, 4, 15312, 240, 16384),  # Llama-3.1-8B at 122,880 tokens: selectable chunks per KV head, in registers
])
def test_chunk_selection_kernel_matches_reference(b, hkv, g, n, k, tile):
    """Softmax, group max, top-k and chunk ids in one kernel: the same ids as the jnp path, in the same
    (increasing slot) order; padding chunks (id >= num_chunks) never win; ties go to the lower slot."""
    from shadowkv_jax.kernels.chunk_selection import padded_width, select_top_chunks, select_top_chunks_reference

    rng = np.random.default_rng(n)
    s = rng.standard_normal((b, hkv, g, n)).astype(np.float32) * 3
    s[..., 3:9] = s[..., 2:3]  # equal logits in every head: tied scores
    ids = np.stack([rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int32), (b, hkv, n)), axis=-1)
                    for _ in range(2)]) + 10  # two layers; ids are not slot numbers
    num_chunks = np.array([n + 10, n // 2 + 10][:b], np.int32)  # the second sequence: half its slots padding
    for layer in (0, 1):
        args = (jnp.asarray(s), jnp.asarray(ids), jnp.asarray(num_chunks), k, jnp.int32(layer))
        got = np.asarray(select_top_chunks(*args, tile=tile, interpret=INTERPRET))
        np.testing.assert_array_equal(got, np.asarray(select_top_chunks_reference(*args)))
        if b > 1 and k <= n // 2:
            assert (got[1] < num_chunks[1]).all()
        # rows padded to a multiple of 16 (as the decode step's landmark kernel writes them): whatever the
        # padding holds (here scores that would win), the same ids
        width = padded_width(n)
        if width > n:
            padded = np.concatenate([s, np.full((b, hkv, g, width - n), 50.0, np.float32)], axis=-1)
            got = select_top_chunks(jnp.asarray(padded), *args[1:], tile=tile, interpret=INTERPRET)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(select_top_chunks_reference(*args)))


def _selection_inputs(rng, b, hkv, g, d, n, layers=2):
    """q, stacked landmarks (rows 3..8 equal to row 2: tied scores in every head), shuffled chunk ids per layer
    (not slot numbers) and chunk counts: the second sequence has half its slots padding."""
    q = jnp.asarray(rng.standard_normal((b, hkv, g, d)), jnp.bfloat16)
    lm = rng.standard_normal((layers, b, hkv, n, d)).astype(np.float32) * 2
    lm[..., 3:9, :] = lm[..., 2:3, :]
    ids = np.stack([rng.permuted(np.broadcast_to(np.arange(n, dtype=np.int32), (b, hkv, n)), axis=-1)
                    for _ in range(layers)]) + 10
    num = np.array([n + 10, n // 2 + 10][:b], np.int32)
    return q, jnp.asarray(lm, jnp.bfloat16), jnp.asarray(ids), jnp.asarray(num)


@pytest.mark.parametrize("b,hkv,g,n,k,splits", [
    (2, 2, 4, 1000, 240, 4),    # slices of 256 slots, the last one ragged; the decode step's k
    (2, 1, 4, 37, 37, 4),       # k = n: one slice of every slot
    (1, 2, 4, 300, 50, 8),      # more splits asked than slices of at least k slots fit: 5 of 64
    (1, 2, 1, 700, 100, 2),     # a group of one, 2 slices of 512
    (1, 2, 4, 15312, 240, 4),   # Llama-3.1-8B at 122,880 tokens x 5: 4 slices of 4,096
])
def test_split_selection_matches_reference(b, hkv, g, n, k, splits):
    """The split selection (each slice's top k, then the top k of their union) with the landmark kernel's
    softmax statistics in parts: the same chunk ids, in the same order, as the jnp selection of the same scores;
    padding chunks never win while the sequence has k real ones; ties go to the lower slot."""
    from shadowkv_jax.kernels.chunk_selection import (padded_width, select_top_chunks_reference,
                                                      select_top_chunks_split)
    from shadowkv_jax.kernels.landmark_scores import DECODE_LAUNCH, landmark_scores

    q, lm, ids, num = _selection_inputs(np.random.default_rng(n), b, hkv, g, 64, n)
    for layer in (0, 1):
        s, parts = landmark_scores(q, lm, jnp.int32(layer), scale=0.125, width=padded_width(n), stats=(ids, num),
                                   interpret=INTERPRET, **DECODE_LAUNCH)
        got = np.asarray(select_top_chunks_split(s, parts, ids, num, k, jnp.int32(layer), splits=splits,
                                                 interpret=INTERPRET))
        np.testing.assert_array_equal(got, np.asarray(select_top_chunks_reference(s[..., :n], ids, num, k,
                                                                                  jnp.int32(layer))))
        if b > 1 and k <= n // 2:
            assert (got[1] < num[1]).all()


@pytest.mark.parametrize("n,blocks", [(300, 1), (1000, 4), (15312, 4)])
def test_landmark_kernel_softmax_statistics_combine_to_the_rows(n, blocks):
    """The landmark kernel's per-program (max, sum of exp) over the slots within the sequence combine to each
    row's masked softmax statistics; a program with no such slot gives (NEG_INF, 0), not a NaN."""
    from shadowkv_jax.kernels.common import NEG_INF
    from shadowkv_jax.kernels.landmark_scores import landmark_scores

    b, hkv, g, span = 2, 2, 4, 128 * blocks
    q, lm, ids, num = _selection_inputs(np.random.default_rng(5), b, hkv, g, 64, n)
    ids = ids.at[1, 1, 0, :span].set(n + 1000)  # layer 1, sequence 1, head 0: its first program's slots all padding
    s, (m, l) = landmark_scores(q, lm, jnp.int32(1), scale=0.125, block=128, blocks=blocks,
                                num_stages=2 if blocks > 1 else 1, stats=(ids, num), interpret=INTERPRET)
    assert m.shape == l.shape == (b, hkv, g, -(-n // span))
    m, l = np.asarray(m, np.float64), np.asarray(l, np.float64)
    valid = np.asarray(ids[1] < num[:, None, None])[:, :, None]  # [B, Hkv, 1, N]
    x = np.where(valid, np.asarray(s, np.float64), -np.inf)
    row_max = x.max(-1)
    np.testing.assert_allclose(m.max(-1), row_max, rtol=1e-6)
    np.testing.assert_allclose((l * np.exp(m - m.max(-1, keepdims=True))).sum(-1),
                               np.exp(x - row_max[..., None]).sum(-1), rtol=1e-5)
    assert (m[1, 0, :, 0] == np.float32(NEG_INF)).all() and (l[1, 0, :, 0] == 0).all()
    assert np.isfinite(m).all() and np.isfinite(l).all() and (m[0, :, :, 0] > np.float32(NEG_INF)).all()


def test_selection_splits_fill_the_programs():
    from shadowkv_jax.kernels.chunk_selection import selection_splits, split_slice_width

    assert [selection_splits(r, 128, 64) for r in (40, 63, 64, 80, 3)] == [4, 4, 1, 1, 64]
    assert [selection_splits(r, 128, 1000) for r in (80, 128, 160)] == [2, 1, 1]
    assert split_slice_width(15312, 4, 240) == 4096 and split_slice_width(300, 8, 50) == 64
    assert split_slice_width(200_000, 2, 240) == 16384  # never over a tile in registers


def test_chunk_selection_kernel_refuses_bad_shapes():
    from shadowkv_jax.kernels.chunk_selection import select_top_chunks

    s = jnp.zeros((2, 2, 4, 8))
    with pytest.raises(ValueError, match="k=9 must be in"):
        select_top_chunks(s, jnp.zeros((1, 2, 2, 8), jnp.int32), jnp.full((2,), 8), 9, interpret=True)
    with pytest.raises(ValueError, match=r"chunk_ids shape \(2, 2, 8\) does not match"):
        select_top_chunks(s, jnp.zeros((2, 2, 8), jnp.int32), jnp.full((2,), 8), 4, interpret=True)


@pytest.mark.parametrize("b,hkv,g,d,n,block,blocks,q_dtype", [
    (2, 2, 4, 128, 300, 128, 1, jnp.bfloat16),  # N past a block edge
    (1, 3, 1, 64, 128, 128, 1, jnp.bfloat16),  # MQA-like group of 1, N exactly one block
    (3, 1, 7, 64, 77, 32, 1, jnp.bfloat16),  # odd group, N straddling three blocks
    (2, 2, 4, 64, 100, 64, 1, jnp.float32),  # fp32 queries, bf16 landmarks: the dot runs in fp32
    (2, 2, 4, 128, 300, 32, 4, jnp.bfloat16),  # 4 blocks a program: the last program's blocks past N
    (1, 2, 4, 64, 256, 32, 2, jnp.bfloat16),  # N exactly 4 programs of 2 blocks
])
def test_landmark_scores_match_reference(b, hkv, g, d, n, block, blocks, q_dtype):
    from shadowkv_jax.kernels.chunk_selection import padded_width
    from shadowkv_jax.kernels.landmark_scores import landmark_scores, landmark_scores_reference

    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.standard_normal((b, hkv, g, d)), q_dtype)
    lm = jnp.asarray(rng.standard_normal((3, b, hkv, n, d)), jnp.bfloat16)
    for layer in (0, 2):
        # the looped launches write rows padded to a multiple of 16, as the decode step asks
        width = padded_width(n) if blocks > 1 else None
        got = landmark_scores(q, lm, jnp.int32(layer), scale=d ** -0.5, block=block, blocks=blocks,
                              num_stages=2 if blocks > 1 else 1, width=width, interpret=INTERPRET)
        want = landmark_scores_reference(q, lm, jnp.int32(layer), scale=d ** -0.5)
        assert got.shape == (b, hkv, g, width or n) and got.dtype == jnp.float32
        got = got[..., :n]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-4)


def test_landmark_scores_refuse_mismatched_shapes():
    from shadowkv_jax.kernels.landmark_scores import landmark_scores

    with pytest.raises(ValueError, match=r"landmarks shape \(2, 1, 2, 16, 64\) does not match"):
        landmark_scores(jnp.zeros((1, 3, 4, 64)), jnp.zeros((2, 1, 2, 16, 64)), jnp.int32(0), interpret=True)
    with pytest.raises(ValueError, match="width=8 must be at least the landmarks' N=16"):
        landmark_scores(jnp.zeros((1, 2, 4, 64)), jnp.zeros((2, 1, 2, 16, 64)), jnp.int32(0), width=8, interpret=True)


@pytest.mark.parametrize("reuse", [False, True], ids=["plain", "reuse"])
@pytest.mark.parametrize("host_rows,value_row,batch", [(1, 0, 3), (2, 1, 3), (3, 0, 2), (1, 2, 2)],
                         ids=["straddle", "offset-straddle", "host-only", "device-only"])
def test_split_values_read_each_row_from_its_part(host_rows, value_row, batch, reuse):
    """SplitValues: rows < host_rows of the whole batch from the host part, the others from the device part
    (on a GPU the host part is in pinned host memory). Each part's unused rows hold 1e4, so reading a row
    from the wrong part would be far off; the micro-batch offset (value_row) counts in the whole batch."""
    from shadowkv_jax.kernels.common import SplitValues

    total, c, k, n_c, h = 4, 8, 21, 50, 2
    q, a, w, chunks, values, inv = make_inputs(6, batch=batch, kv_heads=h, groups=4, head_dim=128, chunk_size=c,
                                               rank=160, selected=k, chunks_total=n_c, dtype=jnp.float32)
    whole = np.full((2, total) + values.shape[2:], 1e4, np.float32)
    whole[:, value_row:value_row + batch] = np.asarray(values)
    host_arr, device_part = jnp.asarray(whole[:, :host_rows]), jnp.asarray(whole[:, host_rows:])
    if COMPILED:
        host_arr = jax.device_put(host_arr, jax.sharding.SingleDeviceSharding(jax.devices()[0],
                                                                                memory_kind="pinned_host"))
    split = SplitValues(host_arr, device_part)
    assert split.shape == whole.shape and split.host_rows == host_rows
    reuse_args = ()
    if reuse:  # half the chunks were selected last step: hits from the cache, misses from the parts
        prev = jnp.concatenate([chunks[..., ::2], jnp.full(chunks.shape[:-1] + (k - (k + 1) // 2,), -1, jnp.int32)],
                               axis=-1)
        reuse_args = (jax.random.normal(jax.random.key(7), (batch, h, k, c, 128)), prev)
    layer = jnp.int32(1)
    got = sparse_attention_partials(q, a, w, chunks, split, inv, layer, *reuse_args, chunk_size=c, block_tokens=32,
                                    num_splits=2, interpret=INTERPRET, value_row=value_row)
    want = sparse_attention_partials(q, a, w, chunks, jnp.asarray(whole), inv, layer, *reuse_args, chunk_size=c,
                                     block_tokens=32, num_splits=2, interpret=INTERPRET, value_row=value_row)
    for x, y in zip(got, want):  # the same values, read from another place: the same partials, bit for bit
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    if not COMPILED:  # the jnp reference reads the parts too (a host part is not jnp-indexable on a GPU)
        ref = sparse_attention_partials_reference(q, a, w, chunks, split, inv, layer, *reuse_args, chunk_size=c,
                                                  value_row=value_row)
        direct = sparse_attention_partials_reference(q, a, w, chunks, values, inv, layer, *reuse_args, chunk_size=c)
        np.testing.assert_allclose(attend(ref[:3], q), attend(direct[:3], q), atol=1e-6, rtol=1e-6)
        if not reuse:  # (with reuse the kernel reads hits from the random cache, the reference from values)
            np.testing.assert_allclose(attend(got[:3], q), attend(direct[:3], q), atol=2e-4, rtol=2e-4)
    with pytest.raises(ValueError, match=rf"value_row={total - batch + 1} does not hold {batch} sequences"):
        sparse_attention_partials(q, a, w, chunks, split, inv, layer, chunk_size=c, interpret=True,
                                  value_row=total - batch + 1)


def test_split_values_refuse_parts_that_do_not_match():
    from shadowkv_jax.kernels.common import SplitValues

    with pytest.raises(ValueError, match=r"SplitValues parts must match but for their rows"):
        SplitValues(jnp.zeros((2, 1, 2, 5, 8, 16)), jnp.zeros((2, 3, 2, 6, 8, 16)))


@pytest.mark.slow  # a GPU study script's smoke test (20-25 s on a 2-core CPU): make test-slow
def test_variant_scripts_check_their_kernels_on_a_small_shape(tmp_path):
    """benchmarks/attention_variants.py and landmark_variants.py (GPU studies) at toy sizes, interpreted: the
    exact variants agree with the jnp reference and every launch gives a time."""
    import json

    from script_loader import load_benchmark

    out = tmp_path / "att.json"
    assert load_benchmark("attention_variants").main([
        "--interpret", "--batch", "1", "--context", "512", "--layers", "1", "--budget", "32",
        "--variants", "base", "prefetch", "no_trig", "--launches", "2/16/4", "--calls", "2", "--repeats", "1",
        "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["check"] for r in rows if "check" in r} == {"base", "prefetch"}
    assert all(r["max_abs_err"] < 5e-3 for r in rows if "check" in r)
    assert [r["variant"] for r in rows if "variant" in r] == ["base", "prefetch", "no_trig"]
    out = tmp_path / "lm.json"
    assert load_benchmark("landmark_variants").main([
        "--interpret", "--batch", "1", "--context", "512", "--layers", "2", "--launches", "rows/64/4", "dot/64/4",
        "--calls", "2", "--repeats", "1",
        "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["max_abs_err"] < 1e-5 and r["ms_per_layer"] > 0 for r in rows)


def _lowers_for_cuda(fn, *args):
    """Lower `fn` for CUDA on this machine: Pallas' Triton lowering runs here, without a GPU (the Triton compiler
    itself, after it, does not)."""
    return jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.parametrize("n,tile", [(15312, 16384), (1000, 256)])
def test_selection_kernels_lower_to_triton_without_a_gpu(n, tile):
    """The selection's kernels (the top-k, the fused selection, the landmark scores at the decode launch) as the
    compiled path lowers them, in one tile and in several: interpreted runs do not go through the Triton lowering,
    whose type rules are stricter (a select of two constants under a scalar predicate failed there, not here)."""
    from shadowkv_jax.kernels.chunk_selection import padded_width, select_top_chunks, select_top_chunks_split
    from shadowkv_jax.kernels.landmark_scores import DECODE_LAUNCH, landmark_scores

    b, hkv, g, d, k = 2, 2, 4, 128, 240
    s = jnp.zeros((b, hkv, g, padded_width(n)), jnp.float32)
    ids, num = jnp.zeros((2, b, hkv, n), jnp.int32), jnp.full((b,), n, jnp.int32)
    assert "shadowkv_chunk_selection" in _lowers_for_cuda(
        lambda s, i, c: select_top_chunks(s, i, c, k, 1, tile=tile), s, ids, num)
    assert "shadowkv_top_k" in _lowers_for_cuda(lambda x: top_k_indices(x, k, tile=tile), s[:, 0, 0, :n])
    q, lm = jnp.zeros((b, hkv, g, d), jnp.bfloat16), jnp.zeros((2, b, hkv, n, d), jnp.bfloat16)
    assert "shadowkv_landmark_scores" in _lowers_for_cuda(
        lambda q, lm: landmark_scores(q, lm, 1, scale=d ** -0.5, width=padded_width(n), **DECODE_LAUNCH), q, lm)
    text = _lowers_for_cuda(lambda q, lm, i, c: select_top_chunks_split(
        *landmark_scores(q, lm, 1, scale=d ** -0.5, width=padded_width(n), stats=(i, c), **DECODE_LAUNCH),
        i, c, k, 1, splits=4), q, lm, ids, num)
    assert "shadowkv_chunk_selection_split" in text and "shadowkv_chunk_selection_merge" in text


@pytest.mark.parametrize("k", [128, 240])
def test_attention_kernels_lower_to_triton_without_a_gpu(k):
    """The attention kernels as the compiled decode step lowers them: the gather-reconstruct kernel at the
    device-values launch with its exact segments in the same launch, the same with value reuse, and the
    full-attention decode kernel (bf16, Llama-3.1-8B's head shapes)."""
    from shadowkv_jax.kernels.decode_attention import decode_attention_partials
    from shadowkv_jax.kernels.sparse_attention import device_values_launch

    c, bf16 = 8, jnp.bfloat16
    q, a, w, chunks, values, inv = make_inputs(0, batch=2, kv_heads=2, groups=4, head_dim=128, chunk_size=c,
                                               rank=160, selected=k, chunks_total=k + 16, dtype=bf16)
    segs = tuple(_segments(1, 2, 2, 2, 128, (32, 16, 24), bf16))
    launch = dict(device_values_launch(k, c), chunk_size=c)
    text = _lowers_for_cuda(lambda q, a, w, ch, v, layer: sparse_attention_partials(
        q, a, w, ch, v, inv, layer, exact=segs, **launch), q, a, w, chunks, values, jnp.int32(1))
    assert "shadowkv_gather_reconstruct_attention" in text
    cache = jnp.zeros((2, 2, k, c, 128), bf16)
    text = _lowers_for_cuda(lambda q, a, w, ch, v, cache, prev: sparse_attention_partials(
        q, a, w, ch, v, inv, jnp.int32(1), cache, prev, **launch), q, a, w, chunks, values, cache, chunks[..., ::-1])
    assert "shadowkv_gather_reconstruct_attention" in text
    kv = jnp.zeros((2, 2, 2, 1024, 128), bf16)
    assert "dense_decode_attention" in _lowers_for_cuda(lambda q, kk, vv: decode_attention_partials(
        q, kk, vv, jnp.array([1000, 17], jnp.int32), jnp.int32(1)), q, kv, kv)
