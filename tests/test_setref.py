"""Set references (catalog/setref.py): latest, latest~N, id prefixes, dates."""

from __future__ import annotations

import time

import pytest

from parbackup.catalog import SetInfo
from parbackup.catalog.setref import pick_set
from parbackup.errors import CatalogError, UsageError


def info(set_id: str, created: str, status: str = "complete") -> SetInfo:
    return SetInfo(set_id, created, created, status, "full", "fill", "desc", 0, 0, 0, 0, [], None)


SETS = [
    info("aa11", "2026-03-01T02:00:00+00:00"),
    info("aa22", "2026-03-02T02:00:00+00:00"),
    info("bb33", "2026-03-03T02:00:00+00:00", "interrupted"),
    info("cc44", "2026-03-04T02:00:00+00:00", "degraded"),
]


def pick(ref: str | None) -> str:
    return pick_set(SETS, ref, "cat").id


def test_latest_and_going_back_skip_sets_that_cannot_be_restored() -> None:
    assert pick(None) == pick("latest") == pick("latest~0") == "cc44"
    assert pick("latest~1") == "aa22"  # bb33 was interrupted
    assert pick("latest~2") == "aa11"
    with pytest.raises(CatalogError, match="only 3 restorable"):
        pick("latest~3")


def test_an_id_or_a_unique_prefix_names_any_set() -> None:
    assert pick("bb33") == "bb33"
    assert pick("b") == "bb33"
    assert pick("AA2") == "aa22"
    with pytest.raises(CatalogError, match="no backup set"):
        pick("dd")


def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates() -> None:
    with pytest.raises(UsageError) as err:
        pick("aa")
    assert err.value.exit_code == 2
    assert "aa11 (2026-03-01T02:00:00+00:00, complete)" in str(err.value)
    assert "aa22" in str(err.value)


def test_a_date_names_the_newest_restorable_set_made_at_or_before_it() -> None:
    assert pick("2026-03-02T02:00:00+00:00") == "aa22"  # at
    assert pick("2026-03-03T12:00:00+00:00") == "aa22"  # bb33 cannot be restored
    assert pick("2026-03-05") == "cc44"
    assert pick("2026-03-04T03:00:00+01:00") == "cc44"  # 02:00 UTC: at it
    assert pick("2026-03-04T02:59:59+01:00") == "aa22"  # a second before
    with pytest.raises(CatalogError, match="at or before 2026-02-01"):
        pick("2026-02-01")


def test_a_date_alone_is_the_end_of_that_local_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert pick("2026-03-02") == "aa22"
        assert pick("2026-03-01") == "aa11"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_word_that_is_no_reference_names_the_forms_a_reference_takes() -> None:
    with pytest.raises(CatalogError, match=r"no backup set 'yesterday' .*latest~N"):
        pick("yesterday")


def test_an_empty_or_blank_name_is_a_usage_error_not_latest() -> None:
    for ref in ("", "  "):
        with pytest.raises(UsageError, match="empty set name") as err:
            pick(ref)
        assert err.value.exit_code == 2
