"""The cost model (issue 4, §2): documented defaults, exact integer pricing, checked overrides."""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter

import pytest

from swiotlb.memory import encryption
from swiotlb.memory.pages import PageAllocator
from swiotlb.sim import costs
from swiotlb.sim.costs import STEPS, CostConfigError, CostModel, page_alloc_key


def test_every_field_is_in_the_defaults_table_with_its_value() -> None:
    doc = costs.__doc__ or ""
    table = doc.split("Defaults", 1)[1]
    lines = [line for line in table.splitlines() if line.startswith("``")]
    rows = {line.split()[0].strip("`"): line for line in lines}
    model = CostModel()
    for name in CostModel.field_names():
        assert name in rows, f"{name} missing from the defaults table"
        value = getattr(model, name)
        assert rows[name].split()[1].replace("_", "") == str(value), name
        note = rows[name].split(None, 2)[2]
        assert "assumption" in note or "model" in note or "scenarios" in note, name
    assert set(rows) == set(CostModel.field_names())


def test_every_step_is_a_documented_count_key() -> None:
    doc = costs.__doc__ or ""
    for step in STEPS:
        key = "page_alloc_order_<k>" if step == "page_alloc" else step
        assert f"``{key}``" in doc


def test_defaults_match_the_memory_model() -> None:
    model = CostModel()
    assert model.decrypt_page_ns == encryption.DEFAULT_COST_NS_PER_PAGE
    assert model.encrypt_page_ns == encryption.DEFAULT_COST_NS_PER_PAGE
    assert model.conversion_call_ns == encryption.DEFAULT_COST_NS_PER_CALL
    param = inspect.signature(PageAllocator).parameters["migrate_cost_ns_per_page"]
    assert model.migrate_page_ns == param.default


def test_hand_computed_mix() -> None:
    model = CostModel()
    counts = Counter(
        {
            "slot_probe": 100,  # 200
            "slot_mark": 4,  # 12
            "list_fixup": 7,  # 14
            "lock_acquire": 2,  # 40
            "copy_byte": 8192,  # 8192*1000/10000 = 819.2 -> 820
            "page_alloc_order_0": 3,  # 3*(500+50) = 1650
            "page_alloc_order_3": 1,  # 500+400 = 900
            "decrypt_page": 8,  # 8000
            "encrypt_page": 2,  # 2000
            "conversion_call": 2,  # 40000
            "pool_walk": 5,  # 50
            "migrate_page": 1,  # 2000
            "worker_wakeup": 1,  # 10000
        }
    )
    expected = 200 + 12 + 14 + 40 + 820 + 1650 + 900 + 8000 + 2000 + 40000 + 50 + 2000 + 10000
    assert model.cost_ns(counts) == expected == 65686
    rows = model.explain(counts)
    assert sum(ns for _, _, ns in rows) == expected
    assert [k for k, _, _ in rows] == [
        "slot_probe", "slot_mark", "list_fixup", "lock_acquire", "copy_byte",
        "page_alloc_order_0", "page_alloc_order_3", "decrypt_page", "encrypt_page",
        "conversion_call", "pool_walk", "migrate_page", "worker_wakeup",
    ]  # fmt: skip
    assert ("copy_byte", 8192, 820) in rows
    assert ("page_alloc_order_3", 1, 900) in rows


def test_empty_and_zero_counts() -> None:
    model = CostModel()
    assert model.cost_ns({}) == 0
    assert model.explain({}) == []
    assert model.explain({"slot_probe": 0}) == [("slot_probe", 0, 0)]


def test_copy_rounds_up_and_is_exact_for_huge_counts() -> None:
    model = CostModel(copy_bytes_per_us=3)
    assert model.copy_ns(0) == 0
    assert model.copy_ns(1) == 334  # 333.33 -> 334
    assert model.copy_ns(3) == 1000
    big = 10**30 + 1
    assert model.copy_ns(big) == -(-big * 1000 // 3)
    assert isinstance(model.cost_ns({"copy_byte": big}), int)


def test_results_are_ints_and_order_independent() -> None:
    model = CostModel()
    a = {"copy_byte": 12345, "slot_probe": 9, "page_alloc_order_10": 2, "pool_walk": 3}
    b = dict(reversed(list(a.items())))
    assert model.explain(a) == model.explain(b)
    assert model.cost_ns(a) == model.cost_ns(b)
    for _, count, ns in model.explain(a):
        assert type(count) is int and type(ns) is int


@pytest.mark.parametrize("order", [0, 1, 3, 9, 10])
def test_page_alloc_priced_by_order(order: int) -> None:
    model = CostModel(page_alloc_base_ns=100, page_alloc_page_ns=7)
    assert page_alloc_key(order) == f"page_alloc_order_{order}"
    assert model.page_alloc_ns(order) == 100 + 7 * (1 << order)
    assert model.cost_ns({page_alloc_key(order): 5}) == 5 * (100 + 7 * (1 << order))


def test_page_alloc_orders_sort_numerically() -> None:
    rows = CostModel().explain({"page_alloc_order_10": 1, "page_alloc_order_2": 1})
    assert [k for k, _, _ in rows] == ["page_alloc_order_2", "page_alloc_order_10"]


@pytest.mark.parametrize(
    "key", ["page_alloc", "page_alloc_order_", "page_alloc_order_01", "page_alloc_order_-1",
            "page_alloc_order_64", "copy_bytes", "slot_probe_ns"]
)  # fmt: skip
def test_unknown_count_keys_are_rejected(key: str) -> None:
    with pytest.raises(CostConfigError, match="unknown step count key") as exc:
        CostModel().cost_ns({key: 1})
    assert repr(key) in str(exc.value)
    assert "page_alloc_order_<k>" in str(exc.value)


@pytest.mark.parametrize("count", [-1, 1.0, True, "3"])
def test_bad_counts_are_rejected(count: object) -> None:
    with pytest.raises(CostConfigError, match="'slot_probe'"):
        CostModel().cost_ns({"slot_probe": count})  # type: ignore[dict-item]


def test_bad_page_alloc_key_order() -> None:
    for bad in (-1, 64, True):
        with pytest.raises(CostConfigError):
            page_alloc_key(bad)


def test_overrides() -> None:
    model = CostModel.from_mapping({"slot_probe_ns": 5, "copy_bytes_per_us": 2_000})
    assert model.slot_probe_ns == 5
    assert model.copy_bytes_per_us == 2_000
    assert model.lock_acquire_ns == CostModel().lock_acquire_ns
    assert model.cost_ns({"slot_probe": 2, "copy_byte": 4096}) == 10 + 2048
    assert CostModel.from_mapping({}) == CostModel()
    zero = CostModel.from_mapping({name: 0 for name in CostModel.field_names()
                                   if name != "copy_bytes_per_us"})  # fmt: skip
    assert zero.cost_ns({"slot_probe": 10, "page_alloc_order_4": 2}) == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.slot_probe_ns = 1  # type: ignore[misc]


def test_unknown_override_names_key_where_and_known_keys() -> None:
    with pytest.raises(CostConfigError) as exc:
        CostModel.from_mapping({"slot_prob_ns": 1}, where="s1.toml [costs]")
    msg = str(exc.value)
    assert msg.startswith("s1.toml [costs]: unknown cost key 'slot_prob_ns'")
    for name in CostModel.field_names():
        assert name in msg


def test_negative_override_names_key_and_where() -> None:
    with pytest.raises(CostConfigError) as exc:
        CostModel.from_mapping({"pool_walk_ns": -3}, where="s11.toml [costs]")
    assert "s11.toml [costs]" in str(exc.value)
    assert "'pool_walk_ns'" in str(exc.value)
    assert ">= 0" in str(exc.value)


@pytest.mark.parametrize("value", [0, -1])
def test_bandwidth_must_be_positive(value: int) -> None:
    expected = r"scenario.toml \[costs\]: cost 'copy_bytes_per_us' must be > 0"
    with pytest.raises(CostConfigError, match=expected):
        CostModel.from_mapping({"copy_bytes_per_us": value})


@pytest.mark.parametrize("value", [1.5, 2.0, True, "10", None])
def test_wrong_type_override_names_key_and_where(value: object) -> None:
    with pytest.raises(CostConfigError) as exc:
        CostModel.from_mapping({"migrate_page_ns": value}, where="x.toml [costs]")
    msg = str(exc.value)
    assert msg.startswith("x.toml [costs]: cost 'migrate_page_ns' must be an integer")


def test_direct_construction_is_validated() -> None:
    with pytest.raises(CostConfigError, match="'slot_mark_ns'"):
        CostModel(slot_mark_ns=-1)
    with pytest.raises(CostConfigError, match="'copy_bytes_per_us'"):
        CostModel(copy_bytes_per_us=0)
