"""`llmctl run` caps glibc's malloc arenas unless the user set MALLOC_ARENA_MAX (llm_operator.operator)."""

from __future__ import annotations

import platform

import pytest
from llm_operator.operator import _fewer_malloc_arenas


def test_a_users_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert _fewer_malloc_arenas() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_glibc_accepts_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert _fewer_malloc_arenas() is True
