"""Gumbel-Rao: straight-through Gumbel-Softmax, Rao-Blackwellised over the Gumbel noise.

The backward pass averages the soft sample's Jacobian over ``num_samples`` Gumbel noise vectors
drawn conditionally on the forward one-hot sample (Paulus et al., ICLR 2021). The conditional
noise is drawn in the backward pass from a seed (``gumbel_jax._random``), in closed form, a few
rows of logits at a time, so nothing of size ``num_samples`` is stored between the passes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from gumbel_jax import _checks, _ops, _random
from gumbel_jax.estimators import _binary
from gumbel_jax.estimators._spec import DISTRIBUTIONS, Spec, register
from gumbel_jax.estimators._straight_through import one_hot_sample


def _conditional_gumbel(
    key: jax.Array, logits: jax.Array, hard: jax.Array, num_samples: int, axis: int
) -> jax.Array:
    """``num_samples`` standard Gumbel vectors ``G`` conditioned on ``argmax(logits + G) = hard``.

    With ``E ~ Exp(1)`` (``_random.exponentials``; ``-log E`` is a standard Gumbel, and ``log E`` is
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
    e = _random.exponentials(_random.noise_seed(key), num_samples, logits.shape)
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
    intermediates stay in the CPU's caches): the same samples as ``_random.exponentials``
    draws, summed over ``k`` for each row.
    """
    logits, tau, hard, seed = residuals
    shape = logits.shape
    size = math.prod(shape)
    pairs = _random.num_pairs(num_samples, size)
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
        e = jnp.stack(_random.exponentials_at(seed, block_base + rows(flat_index)))
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


# Variates that one step of gumbel_rao's backward scan draws, by backend. CPU: 2 MB per float32
# intermediate, which stays in the L2 caches of a 2-core CPU while both cores work on it
# (measured on 2 AMD EPYC cores, 1 MB of L2 each, at k = 100 on [100, 30, 10] logits: 2**19 took
# half the time of no chunking; 2**18 and 2**20 gained less). An accelerator has no such cache to
# fit and gains from parallel work, so there the scan only bounds memory (2**26 variates, 256 MB
# per intermediate); untimed there. Other backends take the default.
_BACKWARD_CHUNK_VARIATES = {"cpu": 2**19}
_DEFAULT_CHUNK_VARIATES = 2**26


def _chunk_variates() -> int:
    """The variates per backward scan step on the default backend (``_BACKWARD_CHUNK_VARIATES``)."""
    return _BACKWARD_CHUNK_VARIATES.get(jax.default_backend(), _DEFAULT_CHUNK_VARIATES)


def _backward_chunks(num_rows: int, variates_per_row: int) -> tuple[int, int]:
    """``(rows per scan step, scan steps)`` of gumbel_rao's backward pass.

    Each step takes as many rows as ``_chunk_variates()`` allows (at least one); the rows
    left after the last whole step are drawn in one piece. Few enough rows for one step take no
    scan: ``(num_rows, 0)``.
    """
    per_step = max(1, _chunk_variates() // variates_per_row)
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
    distribution: str = "categorical",
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
      axis: the category axis (categorical only).
      distribution: ``"categorical"``, or ``"bernoulli"`` for ``logits`` holding the log-odds
        of independent binary variables (any shape; ``+-inf`` are certain outcomes).

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
    if _checks.one_of(distribution, DISTRIBUTIONS, name="distribution") == "bernoulli":
        return _binary.two_categories(gumbel_rao, key, logits, temperature, num_samples=num_samples)
    x, dtype, axis = _checks.logits_array(logits, axis)
    tau = _checks.temperature(temperature, x.dtype)
    num_samples = _checks.positive_int(num_samples, name="num_samples")
    invalid = _ops.invalid_rows(x, axis, tau)
    x = _ops.nan_gradient_where_invalid(x, invalid)
    tau = _ops.nan_gradient_where_invalid(tau, invalid)
    key_sample, key_noise = jax.random.split(key)
    hard = one_hot_sample(key_sample, x, axis)
    one_hot = _rao_blackwell_one_hot(x, tau, hard, _random.noise_seed(key_noise), num_samples, axis)
    return _ops.nan_where_invalid(one_hot, invalid).astype(dtype)


register(
    Spec(
        "gumbel-rao",
        gumbel_rao,
        distributions=DISTRIBUTIONS,
        options={"num_samples": 10},
        reference="Paulus, Maddison, Krause (ICLR 2021), https://arxiv.org/abs/2010.04838",
        summary="ST Gumbel-Softmax Rao-Blackwellised over the noise given the sample",
    )
)
