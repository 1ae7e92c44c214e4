"""The estimator registry: each estimator described once, by a :class:`Spec`.

A spec holds what a caller needs to run an estimator without knowing its name: its function, its
kind (a sample with a gradient, or a surrogate of ``f``), the distributions it supports, its
keyword options with their defaults, the temperature floor its authors require, whether it is
unbiased, how many evaluations of ``f`` it makes, and the paper it comes from. The experiment,
the campaign and the benchmarks read these fields instead of branching on names, so an estimator
registered here (or a :class:`Spec` in a user's module, named ``"module:ATTRIBUTE"``) runs
through all of them.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import jax

KINDS: tuple[str, ...] = ("sample", "surrogate")
"""The kinds of estimator: ``"sample"`` returns a sample whose gradient is the estimator's,
``"surrogate"`` takes the downstream function ``f`` and returns a value to differentiate."""

DISTRIBUTIONS: tuple[str, ...] = ("categorical", "bernoulli")
"""The distributions an estimator may support: one-hot categorical, or independent Bernoulli."""

_OPTION_TYPES = (bool, int, float, str)
# The arguments of the uniform call of each kind (``Spec.bind``), which no option may shadow; a
# surrogate's temperature (REBAR's) is one of its options.
_CALL_ARGUMENTS = {
    "sample": ("key", "logits", "temperature", "axis", "distribution"),
    "surrogate": ("key", "logits", "f", "axis", "distribution"),
}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}

TUNABLE_DOMAINS: tuple[str, ...] = ("real", "positive")
"""The domains of a tunable option (``Spec.tunable``): any real number, or a positive one (tuned
as its logarithm)."""


class Estimator(Protocol):
    """The call every sample estimator takes (options, if any, are further keywords)."""

    def __call__(
        self,
        key: jax.Array,
        logits: jax.typing.ArrayLike,
        temperature: jax.typing.ArrayLike = 1.0,
        *,
        axis: int = -1,
        distribution: str = "categorical",
    ) -> jax.Array: ...


class SurrogateEstimator(Protocol):
    """The call every surrogate estimator takes: ``fn(key, logits, f, ...) -> surrogate``."""

    def __call__(
        self,
        key: jax.Array,
        logits: jax.typing.ArrayLike,
        f: Callable[[jax.Array], jax.Array],
        *,
        axis: int = -1,
        distribution: str = "categorical",
    ) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Spec:
    """The description of one gradient estimator.

    A *sample* estimator is called as
    ``fn(key, logits, temperature, *, axis=-1, distribution="categorical", **options)`` (without
    ``temperature`` when ``uses_temperature`` is false) and returns a sample of the shape of
    ``logits`` (one-hot along ``axis``, or 0.0/1.0 for ``"bernoulli"``; relaxed for the
    relaxed estimator) whose gradient is the estimator's. A *surrogate* estimator is called as
    ``fn(key, logits, f, *, axis=-1, distribution="categorical", **options)`` and returns a
    surrogate whose value is the Monte-Carlo mean of ``f`` and whose gradient is the
    estimator's. :meth:`bind` gives both calls with the options filled in.

    Attributes:
      name: the name it is registered and selected under (e.g. ``"gumbel-rao"``).
      fn: the estimator function.
      kind: ``"sample"`` or ``"surrogate"``.
      distributions: the distributions it supports, a subset of ``DISTRIBUTIONS``.
      options: its keyword options and their defaults (``{"num_samples": 10}``); the values are
        Python ``bool``, ``int``, ``float`` or ``str``, and a caller's value must have the
        default's type (an int is accepted for a float).
      min_temperature: the lowest temperature its authors allow (ReinMax: 1.0), or ``None``.
      uses_temperature: whether ``fn`` takes a temperature (sample estimators; ZGR does not).
      unbiased: whether its gradient is an unbiased estimator of the discrete model's gradient.
      evaluations: for surrogates, the evaluations of ``f`` per example:
        ``evaluations(options, shape)`` with the options bound and ``shape`` one example's
        logits (``(latents, categories)`` or ``(latents,)``); ``None`` for sample estimators
        (one evaluation of the downstream function).
      reference: the paper it comes from (authors, title, venue, link).
      summary: one line saying what its gradient is, for tables and ``--help``.
      control_variate: for surrogates, whether ``fn`` takes a learned control variate: a
        callable passed as its 4th argument, ``fn(key, logits, f, control_variate, ...)``,
        mapping ``[2, *logits.shape]`` relaxed samples to ``[2, *P]`` values, whose parameters
        the estimate is differentiable in (RELAX). The tools then learn one by the variance
        gradient (the experiment a small network of the relaxed latents, the benchmark a short
        fit before measuring); :meth:`bind` passes none.
      tunable: the float options the estimate's gradient is exactly differentiable in when
        they are traced arrays, mapped to their domain (``TUNABLE_DOMAINS``: ``"real"``, or
        ``"positive"``, tuned as its logarithm), e.g. REBAR's ``{"eta": "real",
        "temperature": "positive"}``: ``jax.grad`` of the squared gradient with respect to
        them is the single-sample gradient of the estimator's variance, which tunes them
        (:meth:`bind_learned` passes them as arrays).
    """

    name: str
    fn: Callable[..., jax.Array]
    kind: str = "sample"
    distributions: tuple[str, ...] = ("categorical",)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    min_temperature: float | None = None
    uses_temperature: bool = True
    unbiased: bool = False
    evaluations: Callable[[Mapping[str, Any], tuple[int, ...]], int] | None = None
    reference: str = ""
    summary: str = ""
    control_variate: bool = False
    tunable: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or ":" in self.name:
            raise ValueError(
                f"Spec.name must be a non-empty string without ':' (that separates a module "
                f"from an attribute); got {self.name!r}."
            )
        if not callable(self.fn):
            raise TypeError(f"Spec {self.name!r}: `fn` must be callable; got {self.fn!r}.")
        if self.kind not in KINDS:
            raise ValueError(
                f"Spec {self.name!r}: `kind` must be one of {KINDS}; got {self.kind!r}."
            )
        distributions = tuple(self.distributions)
        if not distributions or any(d not in DISTRIBUTIONS for d in distributions):
            raise ValueError(
                f"Spec {self.name!r}: `distributions` must be a non-empty subset of "
                f"{DISTRIBUTIONS}; got {self.distributions!r}."
            )
        object.__setattr__(self, "distributions", distributions)
        for option, default in dict(self.options).items():
            if not isinstance(option, str) or not isinstance(default, _OPTION_TYPES):
                raise TypeError(
                    f"Spec {self.name!r}: each option must map a name to a bool, int, float or "
                    f"str default; got {option!r}: {default!r}."
                )
            if option in _CALL_ARGUMENTS[self.kind]:
                raise ValueError(
                    f"Spec {self.name!r}: option {option!r} clashes with an argument every "
                    f"{self.kind} estimator takes ({', '.join(_CALL_ARGUMENTS[self.kind])})."
                )
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))
        if self.kind == "surrogate" and self.evaluations is None:
            raise ValueError(
                f"Spec {self.name!r}: a surrogate estimator must say how many evaluations of `f` "
                f"it makes per example (`evaluations(options, shape) -> int`)."
            )
        if self.control_variate and self.kind != "surrogate":
            raise ValueError(
                f"Spec {self.name!r}: only a surrogate estimator takes a learned control variate "
                f"(`control_variate=True`); this one is a {self.kind} estimator."
            )
        for option, domain in dict(self.tunable).items():
            if type(self.options.get(option)) is not float or domain not in TUNABLE_DOMAINS:
                raise ValueError(
                    f"Spec {self.name!r}: `tunable` must map float options to a domain in "
                    f"{TUNABLE_DOMAINS}; got {option!r}: {domain!r}."
                )
        object.__setattr__(self, "tunable", types.MappingProxyType(dict(self.tunable)))

    def __hash__(self) -> int:
        return hash((self.name, self.fn, self.kind))

    @property
    def anneals_temperature(self) -> bool:
        """Whether a training loop's temperature reaches the estimator: a sample estimator that
        uses one (a surrogate samples exactly, and REBAR's or RELAX's relaxation temperature is
        an option of its own)."""
        return self.kind == "sample" and self.uses_temperature

    def check_options(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Returns every option, the defaults overridden by ``options``, after checking them.

        Raises:
          ValueError: an option the estimator does not have (the message lists its options).
          TypeError: a value whose type differs from the default's.
        """
        merged = dict(self.options)
        for option, value in dict(options or {}).items():
            if option not in self.options:
                known = ", ".join(f"{k}={v!r}" for k, v in self.options.items()) or "none"
                raise ValueError(
                    f"estimator {self.name!r} has no option {option!r}; its options (with "
                    f"defaults): {known}."
                )
            default = self.options[option]
            accepted = (int, float) if type(default) is float else (type(default),)
            if (isinstance(value, bool) and type(default) is not bool) or not isinstance(
                value, accepted
            ):
                raise TypeError(
                    f"option {option!r} of estimator {self.name!r} must be "
                    f"{_TYPE_WORDS[type(default)]} (default {default!r}); got {value!r}."
                )
            merged[option] = float(value) if type(default) is float else value
        return merged

    def parse_options(self, assignments: Iterable[str]) -> dict[str, Any]:
        """Parses ``"name=value"`` strings (a command line's) into checked options.

        Each value is read as the type of the option's default (``true``/``false`` for a bool).

        Raises:
          ValueError: a string without ``=``, an unknown option or a value that does not parse.
        """
        options = {}
        for text in assignments:
            option, sep, raw = str(text).partition("=")
            option = option.strip().replace("-", "_")
            if not sep or not option:
                raise ValueError(
                    f"an estimator option must be written NAME=VALUE (e.g. num_samples=100); "
                    f"got {text!r}."
                )
            if option not in self.options:
                self.check_options({option: None})  # raises: names the estimator's options
            default = self.options[option]
            try:
                options[option] = _parse_value(raw.strip(), type(default))
            except ValueError:
                raise ValueError(
                    f"option {option!r} of estimator {self.name!r} takes "
                    f"{_TYPE_WORDS[type(default)]} (default {default!r}); got {raw!r}."
                ) from None
        return self.check_options(options)

    def check_distribution(self, distribution: str) -> str:
        """Returns ``distribution`` if the estimator supports it, else raises ``ValueError``."""
        if distribution not in self.distributions:
            others = names(kind=None, distribution=distribution)
            raise ValueError(
                f"estimator {self.name!r} supports {' and '.join(self.distributions)} latents, "
                f"not {distribution!r}; for {distribution!r} latents use one of: "
                f"{', '.join(others)}."
            )
        return distribution

    def check_temperature(self, temperature: float, *, what: str = "temperature") -> float:
        """Returns ``temperature`` if it is at least ``min_temperature``, else a ``ValueError``."""
        if self.min_temperature is not None and temperature < self.min_temperature:
            raise ValueError(
                f"estimator {self.name!r} needs {what} >= {self.min_temperature:g} (its "
                f"authors' condition); got {temperature:g}.{_reference_hint(self)}"
            )
        return temperature

    def cost(self, options: Mapping[str, Any] | None, shape: tuple[int, ...]) -> int:
        """Evaluations of ``f`` per example with ``options`` on one example's logits ``shape``."""
        if self.evaluations is None:
            return 1
        return int(self.evaluations(self.check_options(options), tuple(shape)))

    def label(self, options: Mapping[str, Any] | None = None) -> str:
        """``name``, followed by the options that differ from the defaults: ``"gumbel-rao"`` or
        ``"gumbel-rao[num_samples=100]"`` (what :func:`parse_variant` reads back)."""
        bound = self.check_options(options)
        changed = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in bound.items()]
        changed = [c for c, k in zip(changed, bound, strict=True) if bound[k] != self.options[k]]
        return f"{self.name}[{','.join(changed)}]" if changed else self.name

    def bind(self, options: Mapping[str, Any] | None = None) -> Callable[..., jax.Array]:
        """``fn`` with its options bound and one call for every estimator of its kind.

        Returns:
          For a sample estimator, ``call(key, logits, temperature, *, axis=-1,
          distribution="categorical")`` (the temperature is dropped for an estimator that does
          not use one); for a surrogate, ``call(key, logits, f, *, axis=-1,
          distribution="categorical")``.
        """
        bound = self.check_options(options)
        fn, uses_temperature = self.fn, self.uses_temperature or self.kind == "surrogate"

        def call(key, logits, third, *, axis=-1, distribution="categorical"):
            args = (key, logits, third) if uses_temperature else (key, logits)
            return fn(*args, axis=axis, distribution=distribution, **bound)

        call.__name__ = call.__qualname__ = f"{self.name}_bound"
        call.__doc__ = f"``{getattr(fn, '__name__', self.name)}`` with options {bound}."
        return call

    def bind_learned(self, options: Mapping[str, Any] | None = None) -> Callable[..., jax.Array]:
        """A surrogate's ``fn`` with its options bound, taking what a caller learns.

        Returns:
          ``call(key, logits, f, control_variate, tuned, *, axis=-1,
          distribution="categorical")``: ``control_variate`` is the learned control variate
          (``None`` for none; only when ``control_variate`` is true), ``tuned`` a mapping of
          (possibly traced) values of ``tunable`` options that override the bound ones.

        Raises:
          ValueError: the estimator is not a surrogate.
        """
        if self.kind != "surrogate":
            raise ValueError(
                f"estimator {self.name!r} is a {self.kind} estimator, not a surrogate."
            )
        bound, fn, takes_cv = self.check_options(options), self.fn, self.control_variate

        def call(key, logits, f, control_variate, tuned, *, axis=-1, distribution="categorical"):
            unknown = set(tuned) - set(self.tunable)
            if unknown:
                raise ValueError(
                    f"estimator {self.name!r} cannot tune {sorted(unknown)}; its tunable options: "
                    f"{sorted(self.tunable) or 'none'}."
                )
            if control_variate is not None and not takes_cv:
                raise ValueError(f"estimator {self.name!r} takes no control variate.")
            args = (key, logits, f, control_variate) if takes_cv else (key, logits, f)
            return fn(*args, axis=axis, distribution=distribution, **{**bound, **tuned})

        call.__name__ = call.__qualname__ = f"{self.name}_bound_learned"
        return call


def _parse_value(raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(raw)
    value = kind(raw)
    if kind is float and not math.isfinite(value):
        raise ValueError(raw)
    return value


def _reference_hint(spec: Spec) -> str:
    return f" See {spec.reference}." if spec.reference else ""


_REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Adds ``spec`` to the registry, so ``spec(name)``, ``names()`` and the tools find it.

    Args:
      spec: the estimator's :class:`Spec`.

    Returns:
      ``spec`` (so a module can write ``MY_SPEC = register(Spec(...))``).

    Raises:
      TypeError: if ``spec`` is not a :class:`Spec`.
      ValueError: if an estimator of that name is already registered.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"register() takes a Spec; got {spec!r} of type {type(spec).__name__}.")
    if spec.name in _REGISTRY:
        raise ValueError(
            f"an estimator named {spec.name!r} is already registered ({_REGISTRY[spec.name].fn!r});"
            f" choose another name."
        )
    _REGISTRY[spec.name] = spec
    return spec


def names(*, kind: str | None = None, distribution: str | None = None) -> tuple[str, ...]:
    """The registered estimators' names, in registration order, optionally filtered.

    Args:
      kind: ``"sample"`` or ``"surrogate"``, or ``None`` for both.
      distribution: keep those supporting ``"categorical"`` or ``"bernoulli"``, or ``None``.
    """
    return tuple(
        s.name
        for s in _REGISTRY.values()
        if (kind is None or s.kind == kind)
        and (distribution is None or distribution in s.distributions)
    )


def spec(name: str | Spec) -> Spec:
    """The :class:`Spec` of a registered estimator, or of a plug-in ``"MODULE:ATTRIBUTE"``.

    ``"MODULE:ATTRIBUTE"`` imports ``MODULE`` (which may register its estimators as it loads)
    and takes the :class:`Spec` at ``ATTRIBUTE``, or the registered estimator of that name if
    the attribute is a string. A :class:`Spec` is returned as it is.

    Raises:
      ValueError: an unknown name, a module that cannot be imported, or an attribute that is
        missing or not a :class:`Spec`; the message names the estimator and what is wrong.
    """
    if isinstance(spec_or_name := name, Spec):
        return spec_or_name
    if not isinstance(name, str):
        raise ValueError(f"an estimator is named by a string; got {name!r}.")
    if ":" in name:
        return _plug_in(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; registered: {', '.join(_REGISTRY)}; or name a Spec in "
            f"your own module as MODULE:ATTRIBUTE."
        ) from None


def parse_variant(text: str) -> tuple[Spec, dict[str, Any]]:
    """Reads an estimator and its options from ``"NAME"`` or ``"NAME[OPTION=VALUE,...]"``.

    ``NAME`` is a registered name or a plug-in ``"MODULE:ATTRIBUTE"`` (see :func:`spec`); the
    options are checked against the spec's (:meth:`Spec.parse_options`). Command lines use it, so
    one word names an estimator with its settings: ``"gumbel-rao[num_samples=100]"``.

    Returns:
      ``(spec, options)``, every option of the spec with the given ones overriding the defaults.

    Raises:
      ValueError: unbalanced brackets, an unknown estimator or option, or a value that does not
        parse; one line naming what is wrong.

    Examples:
      >>> spec_, options = parse_variant("gumbel-rao[num_samples=100]")
      >>> spec_.name, options
      ('gumbel-rao', {'num_samples': 100})
    """
    text = str(text).strip()
    name, bracket, rest = text.partition("[")
    if (bracket and not rest.endswith("]")) or (not bracket and "]" in text):
        raise ValueError(
            f"an estimator with options is written NAME[OPTION=VALUE,...], e.g. "
            f"gumbel-rao[num_samples=100]; got {text!r}."
        )
    found = spec(name.strip())
    assignments = [a for a in rest[:-1].split(",") if a.strip()] if bracket else []
    return found, found.parse_options(assignments)


def _plug_in(name: str) -> Spec:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"a plug-in estimator is written MODULE:ATTRIBUTE; got {name!r}.")
    if "/" in module_name or "\\" in module_name or module_name.endswith(".py"):
        stem = module_name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py")
        raise ValueError(
            f"plug-in estimator {name!r}: {module_name!r} is a file path, not a module name: put "
            f"its folder on PYTHONPATH and write the module's name, e.g. {stem}:{attribute}."
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure while importing the user's module
        raise ValueError(
            f"plug-in estimator {name!r}: cannot import module {module_name!r} "
            f"({type(error).__name__}: {error}); is it on PYTHONPATH?"
        ) from None
    if not hasattr(module, attribute):
        raise ValueError(
            f"plug-in estimator {name!r}: module {module_name!r} has no attribute {attribute!r}."
        )
    value = getattr(module, attribute)
    if isinstance(value, str) and value in _REGISTRY:
        return _REGISTRY[value]
    if not isinstance(value, Spec):
        raise ValueError(
            f"plug-in estimator {name!r}: {module_name}.{attribute} must be a "
            f"gumbel_jax.estimators.Spec (or the name of a registered one); got "
            f"{type(value).__name__}."
        )
    return value


def get(name: str) -> Callable[..., jax.Array]:
    """The function of the sample estimator ``name`` (see ``names(kind="sample")``).

    Raises:
      ValueError: if ``name`` is not a registered sample estimator.
    """
    return _function(name, "sample")


def get_surrogate(name: str) -> Callable[..., jax.Array]:
    """The function of the surrogate estimator ``name`` (see ``names(kind="surrogate")``).

    Raises:
      ValueError: if ``name`` is not a registered surrogate estimator.
    """
    return _function(name, "surrogate")


def _function(name: str, kind: str) -> Callable[..., jax.Array]:
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None or found.kind != kind:
        hint = ""
        if found is not None and found.kind == "surrogate":
            hint = (
                f" {name!r} is a score-function estimator, which needs the downstream function:"
                f" use `get_surrogate({name!r})`."
            )
        elif found is not None:
            hint = f" {name!r} is a sample estimator: use `get({name!r})`."
        what = "estimator" if kind == "sample" else "score-function estimator"
        raise ValueError(
            f"Unknown {what} {name!r}; expected one of "
            f"{', '.join(map(repr, names(kind=kind)))}.{hint}"
        )
    return found.fn
