"""MemoryEncryption: shared-range tracking, double transitions, sleep rule, counted cost."""

from __future__ import annotations

import pytest

from swiotlb.memory import EncryptionError, MemoryEncryption, SleepInAtomicContext

PAGE = 4096
MIB = 1 << 20


def test_decrypt_and_encrypt_track_shared_ranges_and_cost() -> None:
    enc = MemoryEncryption(True, cost_ns_per_page=100, cost_ns_per_call=5000)
    assert not enc.is_shared(0)
    assert enc.set_decrypted(4 * MIB, 1024, may_sleep=True) == 5000 + 1024 * 100  # a 4 MiB pool
    assert enc.is_shared(4 * MIB, 1024) and not enc.is_shared(4 * MIB, 1025)
    assert enc.is_shared(4 * MIB + 100)  # any byte of a shared page
    assert enc.set_decrypted(8 * MIB, 256, may_sleep=True) == 5000 + 256 * 100
    assert enc.shared_ranges() == [(4 * MIB, 5 * MIB)]  # adjacent ranges coalesce
    assert enc.set_encrypted(5 * MIB, 256, may_sleep=True) == 5000 + 256 * 100  # split in the middle
    assert enc.shared_ranges() == [(4 * MIB, MIB), (6 * MIB, 3 * MIB)]
    assert enc.shared_bytes == 4 * MIB
    s = enc.stats
    assert (s.decrypt_ops, s.encrypt_ops, s.decrypted_pages, s.encrypted_pages) == (2, 1, 1280, 256)
    assert s.cost_ns == 3 * 5000 + 1536 * 100
    assert s.shared_pages_hiwater == 1280


def test_double_transitions_are_refused_with_the_page_named() -> None:
    enc = MemoryEncryption(True)
    enc.set_decrypted(0x10000, 4, may_sleep=True)
    with pytest.raises(EncryptionError, match=r"page 0x12000 is already shared"):
        enc.set_decrypted(0x12000, 1, may_sleep=True)
    with pytest.raises(EncryptionError, match=r"page 0x10000 is already shared"):
        enc.set_decrypted(0xE000, 4, may_sleep=True)  # overlaps the start of the shared range
    with pytest.raises(EncryptionError, match=r"page 0x14000 is not shared"):
        enc.set_encrypted(0x12000, 4, may_sleep=True)  # runs past the end
    with pytest.raises(EncryptionError, match=r"page 0x20000 is not shared"):
        enc.set_encrypted(0x20000, 1, may_sleep=True)
    enc.set_encrypted(0x10000, 4, may_sleep=True)
    with pytest.raises(EncryptionError, match="not shared"):
        enc.set_encrypted(0x10000, 4, may_sleep=True)
    assert enc.stats.decrypt_ops == enc.stats.encrypt_ops == 1  # refused calls cost nothing


def test_conversions_may_sleep_and_need_page_aligned_ranges() -> None:
    for enabled in (True, False):
        enc = MemoryEncryption(enabled)
        with pytest.raises(SleepInAtomicContext, match=r"set_decrypted\(0x1000, 1\) may sleep"):
            enc.set_decrypted(PAGE, 1, may_sleep=False)
        with pytest.raises(SleepInAtomicContext):
            enc.set_encrypted(PAGE, 1, may_sleep=False)
        with pytest.raises(EncryptionError, match="not page aligned"):
            enc.set_decrypted(PAGE + 8, 1, may_sleep=True)
        with pytest.raises(EncryptionError, match="must be positive"):
            enc.set_decrypted(PAGE, 0, may_sleep=True)
    with pytest.raises(ValueError, match="power of two"):
        MemoryEncryption(True, page_size=5000)


def test_disabled_encryption_is_a_validated_no_op() -> None:
    enc = MemoryEncryption(False)
    assert enc.set_decrypted(0, 16, may_sleep=True) == 0
    assert enc.set_decrypted(0, 16, may_sleep=True) == 0  # nothing is tracked, nothing to refuse
    assert enc.set_encrypted(0, 16, may_sleep=True) == 0
    assert enc.is_shared(123 * PAGE)  # every page is device-accessible without encryption
    assert enc.stats.decrypt_ops == 0 and enc.stats.cost_ns == 0 and enc.shared_bytes == 0


def test_page_size_scales_ranges() -> None:
    enc = MemoryEncryption(True, page_size=65536)
    enc.set_decrypted(0x10000, 2, may_sleep=True)
    assert enc.shared_ranges() == [(0x10000, 0x20000)]
    with pytest.raises(EncryptionError, match="not page aligned"):
        enc.set_encrypted(0x1000, 1, may_sleep=True)
