"""Stop-string matching and hold-back on plain text."""

from __future__ import annotations

from nanovllm.stop_strings import StopMatch, StopStringMatcher


def test_finds_a_stop_string_that_spans_chunks() -> None:
    matcher = StopStringMatcher(["END"])
    assert matcher.find("abc E", 2) is None
    assert matcher.find("abc EN", 1) is None
    assert matcher.find("abc ENDxyz", 4) == StopMatch("END", 4)


def test_include_in_output_cuts_after_the_stop_string() -> None:
    matcher = StopStringMatcher(["END"], include_in_output=True)
    assert matcher.find("abc ENDxyz", 6) == StopMatch("END", 7)


def test_earliest_occurrence_wins_over_list_order() -> None:
    matcher = StopStringMatcher(["world", "lo"])
    assert matcher.find("hello world", 11) == StopMatch("lo", 3)


def test_only_new_text_is_searched() -> None:
    # "END" ended before the new characters: it was found (or skipped) earlier.
    assert StopStringMatcher(["END"]).find("END and more", 5) is None


def test_holdback_covers_a_possible_stop_prefix() -> None:
    matcher = StopStringMatcher(["</answer>", "\n\n"])
    assert matcher.holdback("the answer</an") == 4
    assert matcher.holdback("line\n") == 1
    assert matcher.holdback("nothing here") == 0
    assert StopStringMatcher([]).holdback("anything") == 0
