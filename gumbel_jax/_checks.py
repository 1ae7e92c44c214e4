"""Argument validation and dtype policy shared by the public modules (private).

Everything here runs at trace time on static information only (shapes, dtypes, and concrete
values: Python and NumPy numbers and arrays, and JAX arrays that are not traced), so it never
branches on traced values and costs nothing inside ``jit``. Errors name the argument, what was
expected and what was received.

The dtype policy: lower-precision floating inputs (``bfloat16``, ``float16``) are computed in
``float32`` and the results are cast back to the input dtype; ``float32`` and ``float64`` inputs
are computed in their own dtype.
"""

from __future__ import annotations

import math
import numbers
import operator

import jax
import jax.numpy as jnp
import numpy as np


def float_dtype(dtype: jax.typing.DTypeLike, *, name: str) -> np.dtype:
    """Returns ``dtype`` as a NumPy dtype, raising ``TypeError`` unless it is floating."""
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a floating dtype (float32, bfloat16, float16, float64); got "
            f"{_received(dtype)}."
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must be a floating dtype (float32, bfloat16, float16, float64); got {dtype}."
        )
    return dtype


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute in for inputs of floating ``dtype``: at least ``float32``."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def float_array(x: jax.typing.ArrayLike, *, name: str) -> tuple[jax.Array, np.dtype]:
    """Converts ``x`` to an array in its compute dtype.

    Args:
      x: a floating array (or a Python/NumPy float value).
      name: the argument's name, for error messages.

    Returns:
      ``(x_compute, dtype)``: ``x`` cast to its compute dtype, and the dtype to return results in.

    Raises:
      TypeError: if ``x`` has an integer, boolean or complex dtype.
    """
    try:
        x = jnp.asarray(x)  # float64 becomes float32 unless x64 is enabled, as everywhere in JAX
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a floating array (a JAX or NumPy array or a Python float); got "
            f"{_received(x)}."
        ) from None
    dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating dtype (float32, bfloat16, float16, float64); got "
            f"{np.dtype(dtype)}. Cast it first, e.g. `{name}.astype(jnp.float32)`."
        )
    dtype = np.dtype(dtype)
    return jnp.asarray(x, compute_dtype(dtype)), dtype


def logits_array(
    logits: jax.typing.ArrayLike, axis: int, *, name: str = "logits"
) -> tuple[jax.Array, np.dtype, int]:
    """Validates logits and the category axis.

    Returns:
      ``(logits_compute, dtype, axis)``: logits in their compute dtype, the dtype to return
      results in, and ``axis`` as a non-negative index.

    Raises:
      TypeError: if ``logits`` is not floating or ``axis`` is not an integer.
      ValueError: if ``logits`` is a scalar or ``axis`` is out of range.
    """
    x, dtype = float_array(logits, name=name)
    if x.ndim == 0:
        raise ValueError(
            f"`{name}` must have at least one dimension (the categories); got a scalar. "
            f"Pass e.g. shape ``[num_categories]`` or ``[batch, num_categories]``."
        )
    return x, dtype, normalize_axis(axis, x.ndim, name=name)


def normalize_axis(axis: int, ndim: int, *, name: str = "logits") -> int:
    """Returns ``axis`` in ``[0, ndim)``, raising ``ValueError`` when out of range."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"`axis` must be an int; got {axis!r} of type {type(axis).__name__}.")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`axis` must be in [{-ndim}, {ndim}) for `{name}` with {ndim} dimension(s); "
            f"got axis={axis}."
        )
    return axis % ndim


def static_value(x: object) -> np.ndarray | None:
    """The value of ``x`` if it is known at trace time, else ``None``.

    Known values are Python numbers (``bool`` excepted), NumPy scalars and arrays, and concrete
    JAX arrays (not tracers: outside ``jit``, ``vmap`` and ``grad``), so that ``0.5``,
    ``np.float32(0.5)`` and ``jnp.array(0.5)`` are checked alike. A tracer (any value inside a
    transformation) is ``None``, so checks on it are skipped and the traced code is unchanged.
    """
    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Number | np.ndarray | np.generic):
        return np.asarray(x)
    if (
        isinstance(x, jax.Array)
        and not isinstance(x, jax.core.Tracer)
        and getattr(x, "is_fully_addressable", True)
    ):
        return np.asarray(x)
    return None


def temperature(
    value: jax.typing.ArrayLike,
    dtype: np.dtype,
    *,
    name: str = "temperature",
    minimum: float = 0.0,
    hint: str = "",
) -> jax.Array:
    """Validates a temperature and returns it as an array of ``dtype``.

    A concrete temperature (a Python or NumPy number or array, or a JAX array outside ``jit``)
    must be ``> minimum`` (``>= minimum`` when ``minimum > 0``); a traced temperature cannot be
    checked here (the samplers make its rows ``NaN`` when it is ``<= 0``: ``_ops.invalid_rows``).

    Raises:
      TypeError: if the temperature is not a real number or array (a string, ``None``, a list,
        a ``bool`` or a complex number), or has a boolean or complex dtype.
      ValueError: if a concrete temperature is out of range or not finite.
    """
    static = static_value(value)
    if static is None and not isinstance(value, jax.Array):  # a tracer is a jax.Array
        raise TypeError(f"`{name}` must be a real number or a real array; got {_received(value)}.")
    if static is not None:
        if not (
            jnp.issubdtype(static.dtype, jnp.floating) or jnp.issubdtype(static.dtype, jnp.integer)
        ):
            raise TypeError(f"`{name}` must be a real number; got {_received(value)}.")
        if not np.all(np.isfinite(static)):
            raise ValueError(f"`{name}` must be finite; got {value!r}.")
        if minimum > 0.0:
            if np.any(static < minimum):
                raise ValueError(f"`{name}` must be >= {minimum}; got {value!r}.{hint}")
        elif np.any(static <= 0.0):
            raise ValueError(
                f"`{name}` must be > 0; got {value!r}. The softmax temperature divides the "
                f"logits, so it must be positive (typical values are 0.1 to 10)."
            )
    else:
        value_dtype = jnp.result_type(value)
        if not (
            jnp.issubdtype(value_dtype, jnp.floating) or jnp.issubdtype(value_dtype, jnp.integer)
        ):
            raise TypeError(
                f"`{name}` must be a real number or array; got a traced value of dtype "
                f"{np.dtype(value_dtype)}."
            )
    return jnp.asarray(value, dtype)


def positive_int(value: object, *, name: str, maximum: int | None = None, what: str = "") -> int:
    """Returns ``value`` as an int in ``[1, maximum]``.

    Raises:
      TypeError: if ``value`` is not an integer (``bool`` is rejected).
      ValueError: if ``value`` is out of range.
    """
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int; got {value!r}.")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"`{name}` must be a Python int (it sets an array shape, so it cannot be traced); "
            f"got {value!r} of type {type(value).__name__}."
        ) from None
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1; got {name}={value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {what} ({maximum}); got {name}={value}.")
    return value


def broadcast_shape(a: jax.Array, b: jax.Array, *, names: tuple[str, str]) -> tuple[int, ...]:
    """The broadcast shape of ``a`` and ``b``, or a ``ValueError`` naming both arguments."""
    try:
        return jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"`{names[0]}` of shape {a.shape} and `{names[1]}` of shape {b.shape} do not "
            f"broadcast against each other."
        ) from None


def logits_pair(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, axis: int, *, names: tuple[str, str]
) -> tuple[jax.Array, jax.Array, np.dtype, int]:
    """Validates two arrays that share the category axis (e.g. a point and the logits).

    The arrays are broadcast against each other (so one may carry extra batch dimensions) and
    ``axis`` indexes the broadcast shape; both must have the full number of categories on it.

    Returns:
      ``(a, b, dtype, axis)``: both arrays broadcast and in the compute dtype, the dtype to
      return results in (the promoted input dtype), and ``axis`` as a non-negative index.

    Raises:
      TypeError: if either array is not floating.
      ValueError: if either is a scalar, the shapes do not broadcast, ``axis`` is out of range,
        or the numbers of categories differ.
    """
    a, a_dtype = float_array(a, name=names[0])
    b, b_dtype = float_array(b, name=names[1])
    for x, name in ((a, names[0]), (b, names[1])):
        if x.ndim == 0:
            raise ValueError(
                f"`{name}` must have at least one dimension (the categories); got a scalar."
            )
    shape = broadcast_shape(a, b, names=names)
    axis = normalize_axis(axis, len(shape), name=f"{names[0]}/{names[1]}")
    from_end = axis - len(shape)
    sizes = [x.shape[from_end] if x.ndim >= -from_end else None for x in (a, b)]
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same number of categories on axis "
            f"{axis}; got shapes {a.shape} and {b.shape}."
        )
    dtype = np.dtype(jnp.promote_types(a_dtype, b_dtype))
    compute = compute_dtype(dtype)
    a = jnp.broadcast_to(a, shape).astype(compute)
    b = jnp.broadcast_to(b, shape).astype(compute)
    return a, b, dtype, axis


def one_of(value: object, choices: tuple[str, ...], *, name: str) -> str:
    """Returns ``value`` if it is one of the strings ``choices``, else raises ``ValueError``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def per_sample_values(
    values: jax.typing.ArrayLike, num_samples: int, shape: tuple[int, ...], max_prefix: int
) -> tuple[jax.Array, np.dtype]:
    """Validates what ``f`` returned for ``num_samples`` samples of logits of shape ``shape``.

    The values must have shape ``[num_samples, *P]`` with ``P = shape[:m]`` for some
    ``m <= max_prefix`` (``max_prefix`` excludes the category axis and the axes after it).

    Returns:
      ``(values_compute, dtype)``: the values in their compute dtype and their own dtype.

    Raises:
      TypeError: if the values are not floating.
      ValueError: if their shape is not ``[num_samples, *P]`` for a valid prefix ``P``.
    """
    values, dtype = float_array(values, name="f(samples)")
    prefix = values.shape[1:]
    valid = [shape[:m] for m in range(max_prefix + 1)]
    if values.ndim == 0 or values.shape[0] != num_samples or prefix not in valid:
        expected = ", ".join(str((num_samples, *p)) for p in valid)
        raise ValueError(
            f"`f` must return one value per sample and per leading index of `logits`: shape "
            f"``[num_samples, *P]`` with ``P`` a prefix of the logits' shape {shape}"
            f"{' before the category axis' if max_prefix < len(shape) else ''}, i.e. one of "
            f"{expected}; got shape {values.shape}."
        )
    return values, dtype


def _received(value: object) -> str:
    """Describes a rejected argument for an error message: its value (abridged) and type."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return f"an array of shape {tuple(shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} of type {type(value).__name__}"


def positive_finite(value: object, *, name: str, allow_zero: bool = False) -> float:
    """Returns ``value`` as a Python float that is finite and > 0 (>= 0 with ``allow_zero``).

    A concrete 0-d array (NumPy, or JAX outside ``jit``) counts as its number.

    Raises:
      TypeError: ``value`` is not a real number (a ``bool`` is not one).
      ValueError: ``value`` is not finite, negative, or zero without ``allow_zero``.
    """
    static = static_value(value) if isinstance(value, jax.Array | np.ndarray) else None
    if static is not None and static.ndim == 0:
        value = static.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {expected}; got {name}={value!r}.")
    return value


def float_pair(
    a: jax.typing.ArrayLike, b: jax.typing.ArrayLike, *, names: tuple[str, str]
) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validates two elementwise arrays (e.g. a point and the logits) and broadcasts them.

    Returns:
      ``(a, b, dtype)``: both arrays broadcast and in the compute dtype, and the dtype to return
      results in (the promoted input dtype).

    Raises:
      TypeError: if either array is not floating.
      ValueError: if the shapes do not broadcast.
    """
    a, a_dtype = float_array(a, name=names[0])
    b, b_dtype = float_array(b, name=names[1])
    shape = broadcast_shape(a, b, names=names)
    dtype = np.dtype(jnp.promote_types(a_dtype, b_dtype))
    compute = compute_dtype(dtype)
    return (
        jnp.broadcast_to(a, shape).astype(compute),
        jnp.broadcast_to(b, shape).astype(compute),
        dtype,
    )


def stretch_interval(
    low: jax.typing.ArrayLike, high: jax.typing.ArrayLike, dtype: np.dtype
) -> tuple[jax.Array, jax.Array]:
    """Validates the stretched interval ``(low, high)`` of the hard concrete.

    Python or NumPy values must be finite with ``low < 0`` and ``high > 1`` (hence ``low < high``),
    so that exact zeros and ones have positive probability; traced values out of range give
    ``NaN`` (the samplers check them with ``_ops.outside_domain``).

    Returns:
      ``(low, high)`` as arrays of ``dtype``.

    Raises:
      TypeError: if either is not a real number or array.
      ValueError: if a static value is out of range or not finite.
    """
    bounds = {"low": (low, "< 0", np.less, 0.0), "high": (high, "> 1", np.greater, 1.0)}
    for name, (value, wanted, inside, limit) in bounds.items():
        static = static_value(value)
        value_dtype = np.dtype(static.dtype if static is not None else jnp.result_type(value))
        if not (
            jnp.issubdtype(value_dtype, jnp.floating) or jnp.issubdtype(value_dtype, jnp.integer)
        ):
            raise TypeError(f"`{name}` must be a real number or array; got {value!r}.")
        if static is not None and not (
            np.all(np.isfinite(static)) and np.all(inside(static, limit))
        ):
            raise ValueError(
                f"`{name}` must be finite and {wanted}; got {name}={value!r}. The hard concrete "
                f"stretches (0, 1) to (low, high) with low < 0 < 1 < high (the paper uses -0.1 "
                f"and 1.1), so that clipping to [0, 1] gives exact zeros and ones."
            )
    return jnp.asarray(low, dtype), jnp.asarray(high, dtype)
