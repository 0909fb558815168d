import pytest

from annotation.aggregate import (Settlement, UnitAnswer, aggregate_unit, aggregate_units,
                                  human_label, pairwise_agreement, units_for_review)


def yes(annotator, category, marked):
    return UnitAnswer(annotator, "yes", category, frozenset(marked))


def test_unanimous_detector_counts_majority_marked_images():
    answers = [yes("a", "person", range(0, 40)), yes("b", "person", range(0, 36)),
               yes("c", "person", range(30, 60))]
    verdict = aggregate_unit(7, answers)
    assert (verdict.answer, verdict.category, verdict.unresolved) == ("yes", "person", False)
    # Images 0-35 are marked by a and b, 30-39 by all three, 40-59 only by c: 0..39 win.
    assert verdict.image_contains == tuple(rank < 40 for rank in range(60))
    assert verdict.precision == pytest.approx(40 / 60)
    assert verdict.is_detector
    assert verdict.agreement == 1.0
    assert human_label(verdict) == "person"


def test_threshold_is_inclusive_at_exactly_sixty_percent():
    at = aggregate_unit(1, [yes(n, "dog", range(36)) for n in "abc"])
    below = aggregate_unit(2, [yes(n, "dog", range(35)) for n in "abc"])
    assert at.precision == pytest.approx(0.6) and at.is_detector
    assert not below.is_detector
    assert aggregate_unit(2, [yes(n, "dog", range(35)) for n in "abc"], threshold=0.5).is_detector


def test_only_annotators_naming_the_winning_category_vote_on_images():
    # b named a different object: its marks must not help images that only a marked.
    answers = [yes("a", "car", range(0, 60)), yes("b", "bus", range(0, 60)),
               yes("c", "car", range(0, 20))]
    verdict = aggregate_unit(3, answers)
    assert verdict.category == "car"
    assert sum(verdict.image_contains) == 20      # strict majority of the 2 car namers
    assert not verdict.is_detector
    assert verdict.agreement == pytest.approx(1 / 3)


def test_no_and_texture_answers_are_not_detectors():
    texture = aggregate_unit(4, [UnitAnswer("a", "texture"), UnitAnswer("b", "texture"),
                                 yes("c", "grass", range(60))])
    assert (texture.answer, texture.category, texture.is_detector) == ("texture", None, False)
    assert not texture.unresolved and texture.precision == 0.0
    assert human_label(texture) is None


def test_ties_are_unresolved_and_listed_for_review():
    answer_tie = aggregate_unit(5, [UnitAnswer("a", "no"), UnitAnswer("b", "texture"),
                                    yes("c", "dog", range(60))])
    category_tie = aggregate_unit(6, [yes("a", "dog", range(60)), yes("b", "cat", range(60)),
                                      UnitAnswer("c", "no")])
    clear = aggregate_unit(8, [UnitAnswer(n, "no") for n in "abc"])
    assert answer_tie.unresolved and answer_tie.answer is None and not answer_tie.is_detector
    assert category_tie.unresolved and category_tie.answer == "yes" and category_tie.category is None
    assert not category_tie.is_detector
    assert [v.unit for v in units_for_review([answer_tie, category_tie, clear])] == [5, 6]


def test_settlement_decides_a_tie_and_uses_that_categorys_marks():
    answers = [yes("a", "dog", range(50)), yes("b", "cat", range(10)), UnitAnswer("c", "no")]
    verdict = aggregate_unit(6, answers, settlement=Settlement("yes", "dog"))
    assert verdict.settled and not verdict.unresolved
    assert verdict.category == "dog" and sum(verdict.image_contains) == 50 and verdict.is_detector


def test_aggregate_units_in_unit_order_with_settlements():
    verdicts = aggregate_units({2: [UnitAnswer("a", "no")], 1: [yes("a", "sea", range(60))]},
                               settlements={2: Settlement("texture")})
    assert [(v.unit, v.answer, v.settled) for v in verdicts] == [(1, "yes", False), (2, "texture", True)]


def test_small_unit_and_agreement_of_fewer_than_two_annotators():
    verdict = aggregate_unit(9, [yes("a", "baby", {0, 1, 2})], n_images=4)
    assert verdict.image_contains == (True, True, True, False) and verdict.is_detector
    assert verdict.agreement is None
    assert pairwise_agreement(["no", "no", "texture", "texture"]) == pytest.approx(2 / 6)


@pytest.mark.parametrize("make", [
    lambda: UnitAnswer("a", "maybe"),
    lambda: UnitAnswer("a", "yes"),
    lambda: UnitAnswer("a", "yes", "  "),
    lambda: UnitAnswer("a", "no", "dog"),
    lambda: UnitAnswer("a", "texture", None, frozenset({1})),
    lambda: UnitAnswer("a", "yes", "dog", frozenset({-1})),
    lambda: Settlement("yes"),
    lambda: Settlement("no", "dog"),
])
def test_inconsistent_answers_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_out_of_range_marks_and_repeated_annotators_are_rejected():
    with pytest.raises(ValueError, match="rank 60"):
        aggregate_unit(1, [yes("a", "dog", {60})])
    with pytest.raises(ValueError, match="more than once"):
        aggregate_unit(1, [UnitAnswer("a", "no"), UnitAnswer("a", "texture")])


def test_adaptive_judging_stops_at_two_on_agreement():
    from annotation.aggregate import answers_needed
    assert answers_needed(["yes:dog", "yes:dog"], judges=3, adaptive=True) == 2
    assert answers_needed(["yes:dog", "no"], judges=3, adaptive=True) == 3
    assert answers_needed(["yes:dog"], judges=3, adaptive=True) == 2
    assert answers_needed(["yes:dog", "yes:dog"], judges=3, adaptive=True, doubtful=True) == 3
    assert answers_needed(["yes:dog", "yes:dog"], judges=3) == 3
    assert answers_needed(["no", "texture"], judges=5, adaptive=True) == 5
