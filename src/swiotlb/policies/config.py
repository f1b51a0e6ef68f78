"""Choosing a policy and its knobs: from a kernel-like command line or from Python.

The kernel's own ``swiotlb=`` parameter keeps its exact meaning (``swiotlb.core.sizing``).
Our options sit beside it, in the ``module.param=value`` form the kernel uses for built-in
module parameters:

    swiotlb=force swiotlb.policy=adaptive swiotlb.idle_ns=5000000000 swiotlb.high_watermark=0.8

* ``swiotlb.policy=NAME`` selects a registered policy (``static`` by default).
* ``swiotlb.KNOB=VALUE`` sets one of that policy's knobs. Integers accept ``0x`` hex and
  ``K``/``M``/``G`` suffixes (bytes), floats, and booleans ``y/n/1/0/true/false``.

:class:`BounceConfig` is the same choice as a Python object. :meth:`BounceConfig.validate`
rejects what cannot work and says what is allowed: unknown policies, unknown knobs, values
of the wrong type, and a dynamic policy combined with ``swiotlb=noforce``, which tells the
kernel never to bounce.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

from swiotlb.core.sizing import parse_cmdline, parse_size
from swiotlb.policies.base import BouncePolicy

PREFIX = "swiotlb."
_TRUE = {"y", "yes", "1", "true", "on"}
_FALSE = {"n", "no", "0", "false", "off"}


class ConfigError(ValueError):
    """A policy configuration that cannot work; the message says what is allowed."""


def knob_defaults(cls: type[BouncePolicy]) -> dict[str, Any]:
    """A policy's knobs and their defaults (its ``knobs()`` or its keyword arguments)."""
    own = getattr(cls, "knobs_schema", None)
    if callable(own):
        return dict(own())
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return {
        p.name: p.default
        for p in params
        if p.name not in ("mem", "env") and p.kind is p.KEYWORD_ONLY
    }


def _value(text: str, like: Any, where: str) -> Any:
    low = text.strip().lower()
    if isinstance(like, bool):
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{where}: {text!r} is not a boolean (use y/n, 1/0, true/false)")
    if isinstance(like, float):
        try:
            return float(low)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not a number") from None
    try:
        return parse_size(low)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not an integer (decimal, 0x hex, K/M/G suffix)") from None


@dataclass(frozen=True)
class BounceConfig:
    """A policy by name and the knobs it is given."""

    policy: str = "static"
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_cmdline(cls, cmdline: str, *, default_policy: str = "static") -> BounceConfig:
        """Read ``swiotlb.policy=`` and ``swiotlb.KNOB=`` options from a command line."""
        from swiotlb.policies import policy_class

        raw: dict[str, str] = {}
        policy = default_policy
        for token in cmdline.split():
            if not token.startswith(PREFIX) or "=" not in token:
                continue
            key, value = token[len(PREFIX) :].split("=", 1)
            if key == "policy":
                policy = value
            else:
                raw[key] = value
        defaults = knob_defaults(policy_class(policy)) if raw else {}
        options = {}
        for key, value in raw.items():
            if key not in defaults:
                allowed = ", ".join(sorted(defaults)) or "none"
                raise ConfigError(f"swiotlb.{key}: policy {policy!r} has no such knob (knobs: {allowed})")
            options[key] = _value(value, defaults[key], f"swiotlb.{key}")
        config = cls(policy, options)
        config.validate(cmdline)
        return config

    def validate(self, cmdline: str = "") -> None:
        """Raise :class:`ConfigError` for an unknown policy or knob, or a contradiction."""
        from swiotlb.policies import policy_class

        try:
            cls = policy_class(self.policy)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        defaults = knob_defaults(cls)
        for key, value in self.options.items():
            if key not in defaults:
                allowed = ", ".join(sorted(defaults)) or "none"
                raise ConfigError(f"policy {self.policy!r} has no knob {key!r} (knobs: {allowed})")
            like = defaults[key]
            if like is not None and not isinstance(value, type(like)) and not (
                isinstance(like, float) and isinstance(value, int)
            ):
                raise ConfigError(
                    f"knob {key!r} of policy {self.policy!r} takes {type(like).__name__}, got {value!r}"
                )
        param = parse_cmdline(cmdline) if cmdline else None
        if param is not None and param.noforce and self.policy != "static":
            raise ConfigError(
                f"swiotlb=noforce turns bouncing off; policy {self.policy!r} would have nothing to "
                "manage (drop noforce, or use swiotlb.policy=static)"
            )
