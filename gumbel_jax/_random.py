"""Random numbers for the samplers and the estimators' backward passes (private).

``drawn_flat`` draws any ``jax.random`` sampler's array flat: the same values, compiled in a
fraction of the time.

Gumbel-Rao draws its conditional Gumbel noise in the backward pass, from a 2-word seed kept from
the forward pass, so nothing of size ``num_samples`` is stored between the passes. The bits come
from an unrolled Threefry-2x32 (the generator of ``jax.random``'s default implementation): XLA
fuses its rounds into the consumer, which on CPU is about twice as fast as
``jax.random.bits``'s loop, and counters let a backward pass draw any block of the samples in
any order (``exponentials_at``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def drawn_flat(
    sampler: Callable[..., jax.Array],
    key: jax.Array,
    shape: tuple[int, ...],
    dtype: jax.typing.DTypeLike = jnp.float32,
) -> jax.Array:
    """``sampler(key, shape, dtype)`` (a ``jax.random`` sampler) drawn flat and reshaped.

    The values are the same as drawing ``shape`` directly (the bits of ``jax.random``'s
    Threefry depend on an element's flat index only), but XLA:CPU compiles the flat draw far
    faster: ``jax.random.gumbel`` on ``(100, 30, 10)`` took 10.5 s to compile, flat 0.8 s
    (jax 0.10.2, 2 CPU cores).
    """
    return sampler(key, (math.prod(shape),), dtype).reshape(shape)


def exponentials(seed: jax.Array, num_samples: int, shape: tuple[int, ...]) -> jax.Array:
    """``num_samples`` arrays of standard exponentials ``E = -log(U)``, float32 ``[k, *shape]``.

    ``U`` is uniform on ``[tiny, 1)`` with 23 random bits, as in ``jax.random.gumbel`` (so
    ``E > 0`` and finite). The bits are Threefry-2x32 (``threefry_2x32``) of counters under the
    2-word ``seed``, both 32-bit halves of each block used (samples ``j`` and ``j + ceil(k / 2)``
    share blocks). On CPU the bits are a large part of Gumbel-Rao's backward.
    """
    size = math.prod(shape)
    pairs = num_pairs(num_samples, size)
    counters = jnp.arange(pairs * size, dtype=jnp.uint32).reshape(pairs, *shape)
    return jnp.concatenate(exponentials_at(seed, counters))[:num_samples]


def num_pairs(num_samples: int, size: int) -> int:
    """The Threefry blocks per logit that ``num_samples`` exponentials take: ``ceil(k / 2)``."""
    pairs = (num_samples + 1) // 2
    if 2 * pairs * size > 2**32:
        raise ValueError(
            f"gumbel_rao draws at most 2**32 conditional Gumbel variates per call; got "
            f"num_samples={num_samples} x {size} logits"
        )
    return pairs


def exponentials_at(seed: jax.Array, counters: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two exponentials of each Threefry block ``counters`` (uint32) of ``exponentials``.

    Block ``j * size + i`` holds sample ``j`` (first word) and sample ``j + ceil(k / 2)``
    (second word) of logit ``i`` (flat index). Returns two float32 arrays of ``counters``' shape.
    """
    words = threefry_2x32(seed[0], seed[1], counters, jnp.zeros_like(counters))
    return tuple(uniform_to_exponential(w) for w in words)


def uniform_to_exponential(words: jax.Array) -> jax.Array:
    """``-log(max(U, tiny))`` for ``U`` uniform on ``[0, 1)`` from the top 23 bits of ``words``.

    ``max``, as in ``jax.random.uniform``, not ``U + tiny``: under ``jit`` XLA folds
    ``(x - 1) + tiny`` into ``x - 1``, which made ``E`` infinite for ``U = 0`` (one draw in
    2**23) and the Gumbel-Rao gradient ``NaN`` when that draw fell on the sampled category of a
    row with a vanishing probability. Every other value is unchanged (``U + tiny == U`` for
    ``U > 0``).
    """
    one_to_two = jax.lax.shift_right_logical(words, jnp.uint32(9)) | jnp.uint32(0x3F800000)
    uniform = jax.lax.bitcast_convert_type(one_to_two, jnp.float32) - 1.0  # [0, 1)
    return -jnp.log(jnp.maximum(uniform, jnp.finfo(jnp.float32).tiny))


def threefry_2x32(
    key0: jax.Array, key1: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the blocks ``(x0, x1)``, unrolled: bitwise the same as
    ``jax.extend.random.threefry_2x32(key, concatenate([x0, x1]))``, whose CPU lowering is a
    loop over five passes through memory; unrolled, XLA fuses the rounds into the consumer (about
    2x faster on CPU).
    """
    keys = (key0, key1, key0 ^ key1 ^ jnp.uint32(0x1BD11BDA))
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0, x1 = x0 + keys[0], x1 + keys[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
        x0 = x0 + keys[(i + 1) % 3]
        x1 = x1 + keys[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def noise_seed(key: jax.Array) -> jax.Array:
    """The 2-word seed of ``exponentials`` drawn from ``key`` (any PRNG implementation)."""
    return jax.random.bits(key, (2,), jnp.uint32)
