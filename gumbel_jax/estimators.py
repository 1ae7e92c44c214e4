"""Gradient estimators for discrete samples: one-hot samples with chosen gradients, and surrogates.

Two kinds, each with its own registry so that an experiment lists only what it can run:

- **Sample estimators** ``fn(key, logits, temperature=1.0, *, axis=-1, ...)`` return a sample
  of ``Categorical(softmax(logits))`` along ``axis`` (a relaxed one for ``gumbel_softmax``, an
  exact one-hot for the others) whose gradient with respect to ``logits`` is the estimator's.
  Selected by name with ``get`` (names in ``NAMES``).
- **Score-function (surrogate) estimators** ``fn(key, logits, f, ...)`` need the downstream
  function ``f``: they draw samples, call ``f`` once on all of them and return a *surrogate*
  whose value is the Monte-Carlo mean of ``f`` and whose gradient is the estimator's (plus the
  pathwise gradient of what ``f`` closes over). Selected with ``get_surrogate`` (names in
  ``SURROGATE_NAMES``).

===================  =====================  ==============================================
name                 function               gradient
===================  =====================  ==============================================
*get*
``"relaxed"``        ``gumbel_softmax``     exact gradient of the relaxed sample (biased
                                            for the discrete problem; not one-hot)
``"st"``             ``straight_through``   ST Gumbel-Softmax: gradient of the soft sample
``"gumbel-rao"``     ``gumbel_rao``         ST-GS Rao-Blackwellised over the Gumbel noise
                                            given the sample (lower variance)
``"reinmax"``        ``reinmax``            second-order (Heun) straight-through
*get_surrogate*
``"reinforce-loo"``  ``reinforce_loo``      REINFORCE with the leave-one-out baseline;
                                            categorical or Bernoulli; unbiased
``"disarm"``         ``disarm``             antithetic pair for Bernoulli logits; unbiased
===================  =====================  ==============================================

The sample estimators accept a traced temperature (annealing does not recompile), masked
(``-inf``) logits, and compute ``bfloat16``/``float16`` inputs in ``float32``. ``gumbel_rao``
and ``reinmax`` are defined with ``jax.custom_vjp`` and so support reverse-mode differentiation
(``grad``, ``vjp``) only. The surrogate estimators work under ``jit`` and ``vmap``, never sample
masked categories, and treat their samples as constants (``f`` needs no gradient with respect to
them).

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gumbel_jax import estimators
  >>> estimator = estimators.get("gumbel-rao")
  >>> loss = lambda logits: jnp.sum(estimator(jax.random.key(0), logits, 0.5) * jnp.arange(3.0))
  >>> jax.grad(loss)(jnp.zeros(3)).shape
  (3,)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from gumbel_jax import _checks, _ops, sample

__all__ = [
    "DISTRIBUTIONS",
    "NAMES",
    "SURROGATE_NAMES",
    "Estimator",
    "SurrogateEstimator",
    "disarm",
    "get",
    "get_surrogate",
    "gumbel_rao",
    "gumbel_softmax",
    "reinforce_loo",
    "reinmax",
    "straight_through",
]


class Estimator(Protocol):
    """The shared signature of the estimators in this module."""

    def __call__(
        self,
        key: jax.Array,
        logits: jax.typing.ArrayLike,
        temperature: jax.typing.ArrayLike = 1.0,
        *,
        axis: int = -1,
    ) -> jax.Array: ...


def gumbel_softmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
) -> jax.Array:
    """The relaxed estimator: the soft sample ``softmax((logits + G) / temperature)``.

    Same as ``sample.gumbel_softmax(key, logits, temperature, axis=axis)``; here for symmetry so
    an experiment can select it by name (``"relaxed"``). The forward value is not one-hot.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis.

    Returns:
      A point of the simplex along ``axis``, of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
      >>> y.shape
      (2, 5)

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
      Maddison, Mnih, Teh. The Concrete Distribution (ICLR 2017), https://arxiv.org/abs/1611.00712
    """
    return sample.gumbel_softmax(key, logits, temperature, hard=False, axis=axis)


def straight_through(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
) -> jax.Array:
    """Straight-through Gumbel-Softmax (ST-GS): hard one-hot forward, soft sample's gradient.

    Same as ``sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)``.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``.
      temperature: a positive temperature (Python number or array, may be traced).
      axis: the category axis.

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``<= 0``.

    Examples:
      >>> y = straight_through(jax.random.key(0), jnp.zeros((2, 5)), 0.5)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Jang, Gu, Poole. Categorical Reparameterization with Gumbel-Softmax (ICLR 2017),
      https://arxiv.org/abs/1611.01144
      Bengio, Leonard, Courville. Estimating or Propagating Gradients Through Stochastic
      Neurons for Conditional Computation (2013), https://arxiv.org/abs/1308.3432
    """
    return sample.gumbel_softmax(key, logits, temperature, hard=True, axis=axis)


def _one_hot_sample(key: jax.Array, logits: jax.Array, axis: int) -> jax.Array:
    """``sample.gumbel_max(key, logits, axis=axis)`` without its ``NaN`` for invalid rows.

    The estimators put ``NaN`` in invalid rows of their own result; a ``NaN``-free one-hot here
    keeps ``_conditional_gumbel`` as fast as before (with it, XLA fuses gumbel_rao's backward
    pass about 40% slower on CPU).
    """
    noise = sample.gumbel(key, logits.shape, logits.dtype)
    return jax.lax.stop_gradient(_ops.one_hot_argmax(logits + noise, axis, logits.dtype))


def _exponentials(seed: jax.Array, num_samples: int, shape: tuple[int, ...]) -> jax.Array:
    """``num_samples`` arrays of standard exponentials ``E = -log(U)``, float32 ``[k, *shape]``.

    ``U`` is uniform on ``[tiny, 1)`` with 23 random bits, as in ``jax.random.gumbel`` (so
    ``E > 0`` and finite). The bits are Threefry-2x32 (``_threefry_2x32``) of counters under the
    2-word ``seed``, both 32-bit halves of each block used (samples ``j`` and ``j + ceil(k / 2)``
    share blocks). On CPU the bits are a large part of Gumbel-Rao's backward.
    """
    size = math.prod(shape)
    pairs = _num_pairs(num_samples, size)
    counters = jnp.arange(pairs * size, dtype=jnp.uint32).reshape(pairs, *shape)
    return jnp.concatenate(_exponentials_at(seed, counters))[:num_samples]


def _num_pairs(num_samples: int, size: int) -> int:
    """The Threefry blocks per logit that ``num_samples`` exponentials take: ``ceil(k / 2)``."""
    pairs = (num_samples + 1) // 2
    if 2 * pairs * size > 2**32:
        raise ValueError(
            f"gumbel_rao draws at most 2**32 conditional Gumbel variates per call; got "
            f"num_samples={num_samples} x {size} logits"
        )
    return pairs


def _exponentials_at(seed: jax.Array, counters: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two exponentials of each Threefry block ``counters`` (uint32) of ``_exponentials``.

    Block ``j * size + i`` holds sample ``j`` (first word) and sample ``j + ceil(k / 2)``
    (second word) of logit ``i`` (flat index). Returns two float32 arrays of ``counters``' shape.
    """
    words = _threefry_2x32(seed[0], seed[1], counters, jnp.zeros_like(counters))
    return tuple(_uniform_to_exponential(w) for w in words)


def _uniform_to_exponential(words: jax.Array) -> jax.Array:
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


def _threefry_2x32(
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


def _noise_seed(key: jax.Array) -> jax.Array:
    """The 2-word seed of ``_exponentials`` drawn from ``key`` (any PRNG implementation)."""
    return jax.random.bits(key, (2,), jnp.uint32)


def _conditional_gumbel(
    key: jax.Array, logits: jax.Array, hard: jax.Array, num_samples: int, axis: int
) -> jax.Array:
    """``num_samples`` standard Gumbel vectors ``G`` conditioned on ``argmax(logits + G) = hard``.

    With ``E ~ Exp(1)`` (``_exponentials``; ``-log E`` is a standard Gumbel, and ``log E`` is
    finite for every draw) and ``Z = sum(exp(logits))``, the conditioned perturbed logits are
    ``log Z - log E_i`` at the sampled category ``i`` (the maximum, ``Gumbel(log Z)``) and
    ``-logaddexp(log E_j - logit_j, log E_i - log Z)`` elsewhere (Gumbels truncated below it).
    ``gumbel_rao``'s backward pass draws the same ``E`` from the same key and uses the closed form
    of the softmax of these perturbed logits (``_rao_blackwell_vjp``).

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` logits in the compute dtype; ``-inf`` masks.
      hard: the one-hot sample, same shape as ``logits``.
      num_samples: the number of conditional noise vectors.
      axis: the category axis (non-negative).

    Returns:
      ``[num_samples, ...]`` noise, 0 at masked categories, with gradients stopped.
    """
    masked = jnp.isneginf(logits)
    safe_logits = jnp.where(masked, 0.0, logits)
    log_z = jax.nn.logsumexp(logits, axis=axis, keepdims=True)
    e = _exponentials(_noise_seed(key), num_samples, logits.shape)
    log_e = jnp.log(e).astype(logits.dtype)
    log_e_max = jnp.sum(jnp.where(hard > 0, log_e, 0.0), axis=axis + 1, keepdims=True)
    at_max = log_z - log_e_max
    below_max = -jnp.logaddexp(log_e - safe_logits, log_e_max - log_z)
    perturbed = jnp.where(hard > 0, at_max, below_max)
    return jax.lax.stop_gradient(jnp.where(masked, 0.0, perturbed - safe_logits))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _rao_blackwell_one_hot(
    logits: jax.Array, tau: jax.Array, hard: jax.Array, seed: jax.Array, num_samples: int, axis: int
) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is Gumbel-Rao's (see ``gumbel_rao``)."""
    del logits, tau, seed, num_samples, axis
    return hard


def _rao_blackwell_fwd(logits, tau, hard, seed, num_samples, axis):
    del num_samples, axis
    return hard, (logits, tau, hard, seed)


def _rao_blackwell_bwd(num_samples, axis, residuals, g):
    """``mean_k J(s_k) g / tau`` for ``s_k`` the softmax of the ``k``-th conditional sample.

    The ``[k, ...]`` samples are drawn here, in the backward pass, from the seed (nothing of size
    ``k`` is kept between the passes), in closed form: with ``p = softmax(logits)`` and the
    exponentials ``E`` of ``_conditional_gumbel``, the perturbed logit ``j`` minus the maximum
    ``i`` is ``gap_j = -log1p(E_j / (p_j E_i))`` (``gap_i = 0``), so ``s = softmax(gap / tau)``:
    three transcendental functions per variate (``log`` for ``E``, ``log1p``, ``exp``) instead of
    the six of the direct formula. The temperature's cotangent is
    ``-mean_k sum_j (J(s_k) g)_j gap_j / tau**2`` (a softmax is unchanged by a shift, so ``gap``
    may stand for the perturbed logits).

    The rows of logits (the category axis moved last) are taken a few at a time
    (``_backward_chunks``: a ``lax.scan`` whose ``[2, ceil(k / 2), rows, categories]``
    intermediates stay in the CPU's caches): the same samples as ``_exponentials`` draws, summed
    over ``k`` for each row.
    """
    logits, tau, hard, seed = residuals
    shape = logits.shape
    size = math.prod(shape)
    pairs = _num_pairs(num_samples, size)
    categories = shape[axis]

    def by_row(x):  # [*shape] -> [rows, categories]
        return jnp.moveaxis(jnp.broadcast_to(x, shape), axis, -1).reshape(-1, categories)

    inv_p = by_row(jnp.exp(-jax.nn.log_softmax(logits, axis=axis)))  # inf at masked categories
    is_hard = by_row(hard > 0)
    inv_tau = by_row(1.0 / tau)
    g = by_row(g.astype(logits.dtype))
    flat_index = by_row(jnp.arange(size, dtype=jnp.uint32).reshape(shape))
    block_base = jnp.arange(pairs, dtype=jnp.uint32)[:, None, None] * jnp.uint32(size)
    # The second word of the last block is not a sample when k is odd.
    is_sample = np.ones((2, pairs, 1, 1), bool)
    is_sample[1, -1] = num_samples % 2 == 0

    def row_sums(first_row, num_rows):
        """Sums over the samples of ``J(s) g`` and ``J(s) g * gap``, ``[num_rows, categories]``."""
        rows = functools.partial(
            jax.lax.dynamic_slice_in_dim, start_index=first_row, slice_size=num_rows
        )
        e = jnp.stack(_exponentials_at(seed, block_base + rows(flat_index)))
        e = e.astype(logits.dtype)  # [2, pairs, num_rows, categories]
        scale = rows(inv_p) / jnp.sum(jnp.where(rows(is_hard), e, 0.0), axis=-1, keepdims=True)
        gap = jnp.where(rows(is_hard), 0.0, -jnp.log1p(e * scale))  # -inf at masked categories
        w = jnp.exp(gap * rows(inv_tau))
        inv_total = 1.0 / jnp.sum(w, axis=-1, keepdims=True)
        mean_g = jnp.sum(w * rows(g), axis=-1, keepdims=True) * inv_total
        jg = jnp.where(is_sample, (w * inv_total) * (rows(g) - mean_g), 0.0)
        return jnp.sum(jg, axis=(0, 1)), jnp.sum(jnp.where(w > 0, jg * gap, 0.0), axis=(0, 1))

    num_rows = size // categories
    rows_per_step, steps = _backward_chunks(num_rows, 2 * pairs * categories)
    pieces = []
    if steps:
        starts = jnp.arange(steps) * rows_per_step
        _, scanned = jax.lax.scan(
            lambda _, start: (None, row_sums(start, rows_per_step)), None, starts
        )
        pieces.append(jax.tree.map(lambda x: x.reshape(-1, categories), scanned))
    if num_rows > steps * rows_per_step:  # the rows after the scan, in one piece
        pieces.append(row_sums(steps * rows_per_step, num_rows - steps * rows_per_step))
    moved_shape = (*shape[:axis], *shape[axis + 1 :], categories)
    grad_sum, gap_sum = (
        (
            jnp.moveaxis(jnp.concatenate(parts).reshape(moved_shape), -1, axis)
            for parts in zip(*pieces, strict=True)
        )
        if pieces
        else (jnp.zeros(shape, logits.dtype),) * 2  # no rows: an empty batch
    )
    grad_logits = grad_sum / (num_samples * tau)
    grad_tau = _sum_to_shape(-gap_sum / (num_samples * tau * tau), jnp.shape(tau))
    return grad_logits, grad_tau, jnp.zeros_like(hard), jnp.zeros(seed.shape, jax.dtypes.float0)


# Variates that one step of gumbel_rao's backward scan draws: 2 MB per float32 intermediate,
# which stays in the L2 caches of a 2-core CPU while both cores work on it. Measured on 2 AMD
# EPYC cores (1 MB of L2 each) at k = 100 on [100, 30, 10] logits: 2**19 took half the time of
# no chunking; 2**18 and 2**20 gained less.
_BACKWARD_CHUNK_VARIATES = 2**19


def _backward_chunks(num_rows: int, variates_per_row: int) -> tuple[int, int]:
    """``(rows per scan step, scan steps)`` of gumbel_rao's backward pass.

    Each step takes as many rows as ``_BACKWARD_CHUNK_VARIATES`` allows (at least one); the rows
    left after the last whole step are drawn in one piece. Few enough rows for one step take no
    scan: ``(num_rows, 0)``.
    """
    per_step = max(1, _BACKWARD_CHUNK_VARIATES // variates_per_row)
    if per_step >= num_rows:
        return num_rows, 0
    return per_step, num_rows // per_step


_rao_blackwell_one_hot.defvjp(_rao_blackwell_fwd, _rao_blackwell_bwd)


def _sum_to_shape(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums ``x`` over the axes that ``shape`` broadcasts to it (the transpose of broadcasting)."""
    x = jnp.sum(x, axis=tuple(range(x.ndim - len(shape))))
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, x.shape, strict=True)) if n == 1 and m > 1)
    return jnp.sum(x, axis=axes, keepdims=True).reshape(shape)


def gumbel_rao(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    num_samples: int = 10,
    axis: int = -1,
) -> jax.Array:
    """Gumbel-Rao (GR-MCk): straight-through Gumbel-Softmax, Rao-Blackwellised over the noise.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))``. Backward: the gradient of
    ``mean_k softmax((logits + G_k) / temperature)`` where ``G_1..G_k`` are Gumbel noise vectors
    drawn conditionally on ``argmax(logits + G_k) = D`` and treated as constants (as in the
    authors' reference implementation). Its expectation equals that of ST-GS and its variance is
    no larger; ``num_samples=1`` has the same distribution as ST-GS. Reverse mode only
    (``jax.custom_vjp``): the conditional noise is drawn in the backward pass.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      temperature: a positive temperature (Python number or array, may be traced; a traced
        value is not checked and 0 gives ``NaN`` gradients).
      num_samples: ``k``, the number of conditional noise samples (a Python int >= 1). The
        backward pass draws them (from the key, again) and its time grows linearly in ``k``;
        nothing of size ``k`` is kept from the forward pass.
      axis: the category axis.

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating, ``temperature`` is not a real number or
        ``num_samples`` is not an int.
      ValueError: if ``axis`` is out of range, ``num_samples < 1`` or a concrete
        ``temperature`` is ``<= 0``.

    Examples:
      >>> y = gumbel_rao(jax.random.key(0), jnp.zeros((2, 5)), 0.5, num_samples=8)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Paulus, Maddison, Krause. Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
      Estimator (ICLR 2021), https://arxiv.org/abs/2010.04838
      Reference implementation: https://github.com/nshepperd/gumbel-rao-pytorch
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    invalid = _ops.invalid_rows(x, axis)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    key_sample, key_noise = jax.random.split(key)
    hard = _one_hot_sample(key_sample, x, axis)
    one_hot = _rao_blackwell_one_hot(x, tau, hard, _noise_seed(key_noise), num_samples, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _reinmax_one_hot(logits: jax.Array, tau: jax.Array, hard: jax.Array, axis: int) -> jax.Array:
    """Returns ``hard``; its vector-Jacobian product is ReinMax's (see ``reinmax``)."""
    del logits, tau, axis
    return hard


def _reinmax_fwd(logits, tau, hard, axis):
    del axis
    return hard, (logits, tau, hard)


def _reinmax_bwd(axis, residuals, g):
    logits, tau, hard = residuals

    def softmax_jacobian_times_g(p):  # (diag(p) - p p^T) g
        return p * g - p * jnp.sum(p * g, axis=axis, keepdims=True)

    pi0 = jax.nn.softmax(logits, axis=axis)
    pi1 = 0.5 * (jax.nn.softmax(_ops.tempered_logits(logits, 0.0, tau), axis=axis) + hard)
    grad = 2.0 * softmax_jacobian_times_g(pi1) - 0.5 * softmax_jacobian_times_g(pi0)
    return grad, jnp.zeros_like(tau), jnp.zeros_like(hard)


_reinmax_one_hot.defvjp(_reinmax_fwd, _reinmax_bwd)


def reinmax(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike = 1.0,
    *,
    axis: int = -1,
) -> jax.Array:
    """ReinMax: a second-order-accurate straight-through estimator.

    Forward: a one-hot sample ``D ~ Categorical(softmax(logits))`` (the temperature is not used
    in the forward pass). Backward: with ``pi0 = softmax(logits)``,
    ``pi1 = (softmax(logits / temperature) + D) / 2`` and ``J(p) = diag(p) - p p^T``, the
    gradient with respect to ``logits`` for an incoming gradient ``g`` is
    ``2 J(pi1) g - J(pi0) g / 2``. Reverse mode only (``jax.custom_vjp``); no gradient flows to
    ``temperature``.

    The authors recommend ``temperature >= 1`` (the temperature enters only the backward pass,
    through ``pi1``), so a concrete temperature below 1 raises ``ValueError``. A traced
    temperature is not checked: values below 1 are used as given, and 0 gives ``NaN``
    gradients.

    An invalid row of logits (a ``NaN`` or ``+inf``, or no finite logit) gives ``NaN`` in its
    values and gradients: see "Invalid inputs" in ``gumbel_jax``.

    Args:
      key: a PRNG key.
      logits: ``[..., num_categories, ...]`` unnormalised log-probabilities on ``axis``;
        ``-inf`` masks a category.
      temperature: a temperature ``>= 1`` (Python number or array, may be traced).
      axis: the category axis.

    Returns:
      An exact one-hot sample (0.0 and 1.0), of the shape and dtype of ``logits``.

    Raises:
      TypeError: if ``logits`` is not floating or ``temperature`` is not a real number.
      ValueError: if ``axis`` is out of range or a concrete ``temperature`` is ``< 1``.

    Examples:
      >>> y = reinmax(jax.random.key(0), jnp.zeros((2, 5)), 1.5)
      >>> y.sum(-1).tolist()
      [1.0, 1.0]

    References:
      Liu, Zhao, Li, Yin, Zhang, Gao, Han. Bridging Discrete and Backpropagation:
      Straight-Through and Beyond (NeurIPS 2023), https://arxiv.org/abs/2304.08612
    """
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(
        temperature,
        x.dtype,
        minimum=1.0,
        hint=(
            " ReinMax's authors recommend temperature >= 1 (Liu et al. 2023, "
            "https://arxiv.org/abs/2304.08612); for lower temperatures use 'st' or 'gumbel-rao'."
        ),
    )
    invalid = _ops.invalid_rows(x, axis)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    hard = _one_hot_sample(key, x, axis)
    one_hot = _reinmax_one_hot(x, tau, hard, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


class SurrogateEstimator(Protocol):
    """The shared call of the score-function estimators: ``fn(key, logits, f) -> surrogate``."""

    def __call__(
        self, key: jax.Array, logits: jax.typing.ArrayLike, f: Callable[[jax.Array], jax.Array]
    ) -> jax.Array: ...


DISTRIBUTIONS: tuple[str, ...] = ("categorical", "bernoulli")
"""The distributions ``reinforce_loo`` samples: one-hot categorical, or independent Bernoulli."""


def _prefix_to_full(values: jax.Array, ndim: int) -> jax.Array:
    """Appends axes of size 1 so ``[*P]`` values broadcast against ``ndim``-dimensional arrays."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def _sum_after_prefix(x: jax.Array, prefix_ndim: int) -> jax.Array:
    """Sums ``x`` over its axes after the first ``prefix_ndim``."""
    return jnp.sum(x, axis=tuple(range(prefix_ndim, x.ndim)))


def reinforce_loo(
    key: jax.Array,
    logits: jax.typing.ArrayLike,
    f: Callable[[jax.Array], jax.Array],
    *,
    num_samples: int = 2,
    distribution: str = "categorical",
    axis: int = -1,
) -> jax.Array:
    """REINFORCE with the leave-one-out baseline, as a surrogate value to differentiate.

    Draws ``S = num_samples`` samples ``z_1..z_S ~ q(logits)``, calls ``f`` once on all of them
    (``f(z)`` has shape ``[S, *P]``) and returns the mean ``mean_s f(z_s)`` of shape ``P``. Its
    gradient with respect to ``logits`` is the leave-one-out estimator::

        1 / (S - 1) * sum_s (f(z_s) - mean_j f(z_j)) * grad log q(z_s)

    (each sample's baseline is the mean of the other ``S - 1`` values), computed separately for
    every element of ``P`` (e.g. every example of a batch), and its gradient with respect to
    whatever ``f`` closes over is the ordinary pathwise one, ``mean_s grad f(z_s)``. The samples
    are constants (``f`` is never differentiated with respect to them), and ``log q(z_s)`` is
    summed over the axes of ``logits`` after ``P``. The surrogate is
    ``mean_s [f(z_s) + A_s * (log q(z_s) - stop_gradient(log q(z_s)))]`` with the advantage
    ``A_s = S / (S - 1) * (f(z_s) - mean_j f(z_j))`` held constant: its forward value is exactly
    the Monte-Carlo mean (the "magic box" of DiCE, to first order: the surrogate's higher
    derivatives are not estimators of anything).

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; masked (``-inf``) categorical logits are never sampled and get a zero gradient;
    Bernoulli logits of ``+-inf`` are certain outcomes (value and zero gradient, no ``NaN``).

    Args:
      key: a PRNG key.
      logits: ``[*P, ..., num_categories, ...]`` unnormalised log-probabilities (categorical,
        the categories on ``axis``; ``-inf`` masks a category) or ``[*P, ...]`` logits of
        ``P(1) = sigmoid(logits)`` (Bernoulli).
      f: any JAX function mapping ``[num_samples, *logits.shape]`` samples (one-hot along
        ``axis``, or 0.0/1.0) to ``[num_samples, *P]`` floating values, ``P`` a prefix of
        ``logits.shape`` that stops before the category axis.
      num_samples: ``S >= 2``, a Python int.
      distribution: ``"categorical"`` or ``"bernoulli"``.
      axis: the category axis (categorical only; ignored for ``"bernoulli"``).

    Returns:
      The surrogate: ``mean_s f(z_s)``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating, or ``num_samples`` or
        ``axis`` is not an int.
      ValueError: if ``num_samples < 2``, ``distribution`` is unknown, ``axis`` is out of range
        or ``f``'s values do not have shape ``[num_samples, *P]`` (the message lists the valid
        shapes).

    Examples:
      >>> f = lambda z: jnp.sum(z * jnp.arange(3.0), axis=-1)  # [S, batch, 3] -> [S, batch]
      >>> loss = lambda x: reinforce_loo(jax.random.key(0), x, f, num_samples=4).sum()
      >>> jax.grad(loss)(jnp.zeros((2, 3))).shape
      (2, 3)

    References:
      Kool, van Hoof, Welling. Buy 4 REINFORCE Samples, Get a Baseline for Free! (ICLR 2019
      workshop), https://openreview.net/forum?id=r1lgTGL5DE
      Mnih, Rezende. Variational Inference for Monte Carlo Objectives (ICML 2016),
      https://arxiv.org/abs/1602.06725
      Williams. Simple Statistical Gradient-Following Algorithms for Connectionist
      Reinforcement Learning (1992).
      Foerster et al. DiCE: The Infinitely Differentiable Monte Carlo Estimator (ICML 2018),
      https://arxiv.org/abs/1802.05098
    """
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    if num_samples < 2:
        raise ValueError(
            f"`num_samples` must be >= 2 (the leave-one-out baseline of a sample is the mean of "
            f"the others); got num_samples={num_samples}."
        )
    distribution = _checks.one_of(distribution, DISTRIBUTIONS, name="distribution")
    if distribution == "categorical":
        x, _, axis = _checks.logits_array(logits, axis)
        z = sample.gumbel_max(key, jnp.broadcast_to(x, (num_samples, *x.shape)), axis=axis + 1)
    else:
        x, _ = _checks.float_array(logits, name="logits")
        z = _ops.bernoulli_below(jax.random.uniform(key, (num_samples, *x.shape), x.dtype), x)
    return _reinforce_loo_surrogate(x, z, f, distribution, axis)


def _reinforce_loo_surrogate(
    x: jax.Array, z: jax.Array, f: Callable[[jax.Array], jax.Array], distribution: str, axis: int
) -> jax.Array:
    """``reinforce_loo`` given its samples ``z`` (``[S, *x.shape]``); ``axis`` non-negative."""
    num_samples = z.shape[0]
    z = jax.lax.stop_gradient(z)
    if distribution == "categorical":
        log_q = _ops.categorical_log_prob(z, x[None], axis + 1)  # [S, *shape without axis]
        max_prefix = axis
    else:
        log_q = _ops.bernoulli_log_prob(z, x)
        max_prefix = x.ndim
    values, dtype = _checks.per_sample_values(f(z), num_samples, x.shape, max_prefix)
    log_q = _sum_after_prefix(log_q, values.ndim).astype(values.dtype)
    mean = jnp.mean(values, axis=0)
    advantage = jax.lax.stop_gradient(num_samples / (num_samples - 1) * (values - mean))
    score = log_q - jax.lax.stop_gradient(log_q)  # 0 in value, grad log q in gradient
    return (mean + jnp.mean(advantage * score, axis=0)).astype(dtype)


def disarm(
    key: jax.Array, logits: jax.typing.ArrayLike, f: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """DisARM for Bernoulli latents: one antithetic pair, as a surrogate value to differentiate.

    With ``u ~ Uniform[0, 1)`` of the shape of ``logits``, ``b = 1[u < sigmoid(logits)]`` and the
    antithetic ``b~ = 1[1 - u < sigmoid(logits)]`` (both exactly ``Bernoulli(sigmoid(logits))``),
    ``f`` is called once on the pair stacked, ``[2, *logits.shape]``, and returns ``[2, *P]``
    (``P`` a prefix of ``logits.shape``). The result is the pair's mean ``(f(b) + f(b~)) / 2``,
    shape ``P``; its gradient with respect to coordinate ``d`` of ``logits`` is::

        (f(b) - f(b~)) / 2 * (-1)^{b~_d} * 1[b_d != b~_d] * sigmoid(|logits_d|)

    with ``f`` of the element of ``P`` that ``d`` belongs to: an unbiased estimator of the
    gradient of ``E[f(b)]`` (ARM's pair, Rao-Blackwellised over the logistic noise). Whatever
    ``f`` closes over gets the pathwise gradient of the pair's mean. The pair is constant for
    differentiation.

    Invalid values: a ``NaN`` logit makes the value and gradient of its element of ``P``
    ``NaN``; logits of ``+-inf`` are certain outcomes (``b = b~``), with zero gradient.

    Args:
      key: a PRNG key.
      logits: ``[*P, ...]`` logits of ``P(b = 1) = sigmoid(logits)``, any shape.
      f: any JAX function mapping ``[2, *logits.shape]`` samples (0.0/1.0) to ``[2, *P]``
        floating values.

    Returns:
      The surrogate: ``(f(b) + f(b~)) / 2``, shape ``P``, in the dtype of ``f``'s values.

    Raises:
      TypeError: if ``logits`` or ``f``'s values are not floating.
      ValueError: if ``f``'s values do not have shape ``[2, *P]``.

    Examples:
      >>> f = lambda b: jnp.sum((b - 0.49) ** 2, axis=-1)  # [2, 5] -> [2]
      >>> g = jax.grad(lambda x: disarm(jax.random.key(0), x, f))(jnp.zeros(5))
      >>> g.shape
      (5,)

    References:
      Dong, Mnih, Tucker. DisARM: An Antithetic Gradient Estimator for Binary Latent Variables
      (NeurIPS 2020), https://arxiv.org/abs/2006.10680
      Yin, Zhou. ARM: Augment-REINFORCE-Merge Gradient Estimator for Binary Latent Variables
      (ICLR 2019), https://arxiv.org/abs/1807.11143
    """
    x, _ = _checks.float_array(logits, name="logits")
    return _disarm_surrogate(x, jax.random.uniform(key, x.shape, x.dtype), f)


def _disarm_surrogate(x: jax.Array, u: jax.Array, f: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``disarm`` given its uniform noise ``u`` (of the shape of ``x``)."""
    u = jax.lax.stop_gradient(u)
    b, b_tilde = _ops.bernoulli_below(u, x), _ops.bernoulli_below(1.0 - u, x)
    values, dtype = _checks.per_sample_values(f(jnp.stack([b, b_tilde])), 2, x.shape, x.ndim)
    half_difference = _prefix_to_full((values[0] - values[1]) / 2, x.ndim)
    sign = 1.0 - 2.0 * b_tilde  # (-1)^{b~}
    weight = half_difference * sign * (b != b_tilde) * jax.nn.sigmoid(jnp.abs(x))
    weight = jax.lax.stop_gradient(weight)
    finite = jnp.where(jnp.isinf(x), 0.0, x)  # inf - inf would be NaN; b = b~ there anyway
    score = _sum_after_prefix(weight * (finite - jax.lax.stop_gradient(finite)), values.ndim - 1)
    return (jnp.mean(values, axis=0) + score.astype(values.dtype)).astype(dtype)


_REGISTRY: dict[str, Estimator] = {
    "relaxed": gumbel_softmax,
    "st": straight_through,
    "gumbel-rao": gumbel_rao,
    "reinmax": reinmax,
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""The estimators' names, as accepted by ``get``: relaxed, st, gumbel-rao, reinmax."""


_SURROGATE_REGISTRY: dict[str, SurrogateEstimator] = {
    "reinforce-loo": reinforce_loo,
    "disarm": disarm,
}

SURROGATE_NAMES: tuple[str, ...] = tuple(_SURROGATE_REGISTRY)
"""The score-function estimators' names, as accepted by ``get_surrogate``: reinforce-loo, disarm."""


def get(name: str) -> Estimator:
    """Returns the estimator called ``name``.

    Args:
      name: one of ``NAMES``: ``"relaxed"`` (``gumbel_softmax``), ``"st"``
        (``straight_through``), ``"gumbel-rao"`` (``gumbel_rao``), ``"reinmax"`` (``reinmax``).

    Returns:
      The estimator function ``fn(key, logits, temperature=1.0, *, axis=-1, ...)``.

    Raises:
      ValueError: if ``name`` is not one of ``NAMES``.

    Examples:
      >>> get("st") is straight_through
      True
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        hint = ""
        if isinstance(name, str) and name in _SURROGATE_REGISTRY:
            hint = (
                f" {name!r} is a score-function estimator, which needs the downstream function:"
                f" use `get_surrogate({name!r})`."
            )
        raise ValueError(
            f"Unknown estimator {name!r}; expected one of {', '.join(map(repr, NAMES))}.{hint}"
        ) from None


def get_surrogate(name: str) -> SurrogateEstimator:
    """Returns the score-function estimator called ``name``.

    Args:
      name: one of ``SURROGATE_NAMES``: ``"reinforce-loo"`` (``reinforce_loo``), ``"disarm"``
        (``disarm``).

    Returns:
      The estimator ``fn(key, logits, f, ...)``, which returns a surrogate value to
      differentiate.

    Raises:
      ValueError: if ``name`` is not one of ``SURROGATE_NAMES``.

    Examples:
      >>> get_surrogate("disarm") is disarm
      True
    """
    try:
        return _SURROGATE_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown score-function estimator {name!r}; expected one of "
            f"{', '.join(map(repr, SURROGATE_NAMES))}."
        ) from None
