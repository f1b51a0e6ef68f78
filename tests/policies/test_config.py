"""Choosing a policy and its knobs from a command line or from Python (issue 3 §4)."""

from __future__ import annotations

import pytest

from swiotlb import Machine
from swiotlb.policies import AdaptivePolicy, Linux66Policy
from swiotlb.policies.config import BounceConfig, ConfigError, knob_defaults
from tests.conftest import pure_only


def test_cmdline_selects_policy_and_parses_knobs() -> None:
    c = BounceConfig.from_cmdline(
        "console=ttyS0 swiotlb=force swiotlb.policy=adaptive swiotlb.idle_ns=5000000000 "
        "swiotlb.high_watermark=0.8 swiotlb.transient=n swiotlb.max_grow_slabs=0x8000"
    )
    assert c.policy == "adaptive"
    assert c.options == {"idle_ns": 5_000_000_000, "high_watermark": 0.8, "transient": False,
                         "max_grow_slabs": 0x8000}


def test_without_options_the_static_pool_is_chosen() -> None:
    assert BounceConfig.from_cmdline("swiotlb=65536,force") == BounceConfig("static", {})


@pytest.mark.parametrize(
    ("cmdline", "message"),
    [
        ("swiotlb.policy=bogus", "unknown policy 'bogus'; known policies:"),
        ("swiotlb.policy=adaptive swiotlb.idle=5", r"no such knob \(knobs: .*idle_ns"),
        ("swiotlb.policy=adaptive swiotlb.idle_ns=soon", "not an integer"),
        ("swiotlb.policy=adaptive swiotlb.transient=maybe", "not a boolean"),
        ("swiotlb.policy=static swiotlb.idle_ns=5", r"knobs: none"),
        ("swiotlb=noforce swiotlb.policy=linux-6.6", "noforce turns bouncing off"),
    ],
)
def test_invalid_configurations_say_what_is_allowed(cmdline: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BounceConfig.from_cmdline(cmdline)


def test_python_config_is_validated_too() -> None:
    with pytest.raises(ConfigError, match="takes float"):
        BounceConfig("adaptive", {"high_watermark": "high"}).validate()
    BounceConfig("adaptive", {"high_watermark": 1}).validate()  # an int where a float is fine


def test_knob_schemas_come_from_the_policies() -> None:
    assert knob_defaults(AdaptivePolicy)["idle_ns"] == 30_000_000_000
    assert set(knob_defaults(Linux66Policy)) == {"default_nslabs", "default_nareas", "worker_delay_ns", "transient"}


def test_machine_reads_the_policy_from_its_command_line() -> None:
    m = Machine("4G", cmdline="swiotlb=force swiotlb.policy=adaptive swiotlb.idle_ns=7")
    assert isinstance(m.policy, AdaptivePolicy) and m.policy.knobs.idle_ns == 7
    with pytest.raises(ConfigError):
        Machine("4G", cmdline="swiotlb=force swiotlb.policy=adaptive swiotlb.nope=1")


@pure_only("swiotlb.policies.linux66", "__init__ keeps no signature, which is why knobs_schema spells it out")
def test_linux66_knob_schema_matches_its_init() -> None:
    import inspect

    params = list(inspect.signature(Linux66Policy.__init__).parameters.values())
    declared = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    assert Linux66Policy.knobs_schema() == declared
    assert list(Linux66Policy.knobs_schema()) == list(declared)
