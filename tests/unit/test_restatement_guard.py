"""The restatement guard's rule (SPEC D13), exact at its boundary."""

from __future__ import annotations

from kpi.snapshot import RestatementGuard


def test_a_share_at_the_limit_is_allowed_and_one_row_more_is_refused():
    guard = RestatementGuard(max_removed=0.29)
    assert not guard.refuses(stored=100, kept=71, would_remove=29)  # 0.29 * 100 is 28.999...
    assert guard.refuses(stored=100, kept=70, would_remove=30)
    assert not RestatementGuard(0.1).refuses(stored=10, kept=9, would_remove=1)
    assert RestatementGuard(0.1).refuses(stored=10, kept=8, would_remove=2)


def test_keeping_none_of_the_stored_rows_is_refused_even_with_a_limit_of_one():
    assert RestatementGuard(1.0).refuses(stored=5, kept=0, would_remove=5)
    assert not RestatementGuard(1.0).refuses(stored=5, kept=1, would_remove=4)


def test_a_day_never_stored_and_an_allowed_run_are_never_refused():
    assert not RestatementGuard(0.1).refuses(stored=0, kept=0, would_remove=0)
    assert not RestatementGuard(0.1, allow_removals=True).refuses(stored=5, kept=0,
                                                                  would_remove=5)
