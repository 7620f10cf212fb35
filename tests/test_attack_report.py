"""The attack bench's tally: verdicts against targets, the four totals, and the report's text."""

from hypothesis import given
from hypothesis import strategies as st

from bench.attack_report import (
    FUSE,
    SESSIONS,
    TOKENLESS,
    TOTALS,
    TRAPS,
    Row,
    attacks_by_finding,
    render,
    totals,
)


def row(value, target=0, *, at_least=False, total=None, finding="1", attacks=1):
    return Row(
        finding,
        "kind",
        attacks,
        value,
        target,
        "what happened",
        at_least=at_least,
        total=total,
    )


def test_a_row_passes_within_its_bound_and_fails_beyond_it():
    assert row(0).verdict == "PASS"
    assert row(1).verdict == "FAIL"
    assert row(2.0, 1.9).verdict == "FAIL"
    assert row(1.9, 1.9).verdict == "PASS"
    assert row(3, 3, at_least=True).verdict == "PASS"
    assert row(2, 3, at_least=True).verdict == "FAIL"


def test_an_attack_that_could_not_run_is_skipped_not_passed():
    assert row(None).verdict == "SKIP"
    assert totals([row(None, total=SESSIONS)])[SESSIONS] == 0


def test_counts_add_up_and_the_fuse_figure_is_the_worst_excess():
    rows = [
        row(1, total=SESSIONS),
        row(2, total=SESSIONS),
        row(1, total=TRAPS),
        row(8, total=TOKENLESS),
        row(30.0, total=FUSE),
        row(12.5, total=FUSE),
        row(5),
    ]
    assert totals(rows) == {SESSIONS: 3, FUSE: 30.0, TRAPS: 1, TOKENLESS: 8}


def test_attacks_are_counted_per_finding_in_the_order_they_first_appear():
    rows = [
        row(0, finding="2", attacks=8),
        row(0, finding="1", attacks=1),
        row(0, finding="2", attacks=6),
    ]
    assert attacks_by_finding(rows) == {"2": 14, "1": 1}


def test_the_report_shows_every_row_verdict_and_every_total():
    rows = [
        row(1, total=SESSIONS),
        row(0, finding="5", total=TOKENLESS),
        row(None, finding="9"),
    ]
    text = render(rows, title="bench")
    assert "[FAIL]   1 kind: 1 (target <= 0; 1 attacks)" in text
    assert "[PASS]   5 kind" in text and "[SKIP]   9 kind: -" in text
    assert "[FAIL] sessions of others touched: 1" in text
    assert "[PASS] API calls accepted without a valid token: 0" in text
    assert "rows: 1 PASS, 1 FAIL, 1 SKIP; totals failing: 1" in text


@given(st.lists(st.tuples(st.sampled_from(TOTALS), st.integers(0, 50)), max_size=20))
def test_a_total_is_zero_exactly_when_every_row_counted_in_it_is_zero(values):
    rows = [row(v, total=name) for name, v in values]
    got = totals(rows)
    for name in TOTALS:
        assert (got[name] == 0) == all(v == 0 for n, v in values if n == name)
