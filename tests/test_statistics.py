import math

import numpy as np
import pytest

from annotation.aggregate import UnitAnswer, UnitVerdict, aggregate_unit
from annotation.statistics import (ClipJudgement, agreement_summary, automatic_agreement,
                                   clip_audibility, detector_histogram, detectors_by_threshold,
                                   fleiss_kappa, table1)

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
                   [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
                   [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def verdict(unit, category=None, precision=0.0, threshold=0.6, unresolved=False):
    """A verdict as aggregate_unit would give it, built directly for the statistics."""
    return UnitVerdict(unit=unit, answer="yes" if category else "no", category=category,
                       unresolved=unresolved, image_contains=(), precision=precision,
                       is_detector=bool(category) and not unresolved and precision >= threshold,
                       agreement=1.0, annotators=("a", "b", "c"))


def test_fleiss_kappa_matches_the_textbook_example():
    assert fleiss_kappa(WIKIPEDIA_TABLE) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_extremes_and_bad_tables():
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))          # chance agreement already perfect
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[3, 0], [1, 1]])
    with pytest.raises(ValueError):
        fleiss_kappa(np.zeros((0, 3)))


def test_agreement_summary_uses_complete_units_and_answer_plus_category_labels():
    yes = lambda who, what: UnitAnswer(who, "yes", what, frozenset({0}))
    answers = {
        1: [yes("a", "dog"), yes("b", "dog"), yes("c", "dog")],
        2: [yes("a", "dog"), yes("b", "cat"), UnitAnswer("c", "no")],
        3: [UnitAnswer("a", "texture"), UnitAnswer("b", "texture"), UnitAnswer("c", "no")],
        4: [UnitAnswer("a", "no")],                                 # incomplete: left out
    }
    summary = agreement_summary(answers)
    assert summary.n_units == 3
    assert summary.labels == ("no", "texture", "yes:cat", "yes:dog")
    table = [[0, 0, 0, 3], [1, 0, 1, 1], [1, 2, 0, 0]]
    assert summary.kappa == pytest.approx(fleiss_kappa(table))
    assert summary.mean_agreement == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert agreement_summary({4: answers[4]}) is None


def test_table1_reproduces_the_papers_sound_column():
    # 91 detectors, 49 of them characteristic; 30 clips judged each; 1,194 audible clips.
    characteristic = {"person": True, "tree": False}
    verdicts = ([verdict(u, "person", 0.8) for u in range(49)]
                + [verdict(u, "tree", 0.7) for u in range(49, 91)]
                + [verdict(u, "person", 0.3) for u in range(91, 120)]     # not detectors
                + [verdict(u, None) for u in range(120, 256)])
    audible_per_unit = [25] * 18 + [24] * 31                            # 450 + 744 = 1,194
    judgements = [ClipJudgement(u, clip, "x", "yes" if clip < audible_per_unit[u] else "no")
                  for u in range(49) for clip in range(30)]
    # Trees cannot be audible in the paper's sense: "yes" there must not count in row 3.
    judgements += [ClipJudgement(u, clip, "x", "yes") for u in range(49, 91) for clip in range(30)]
    judgements += [ClipJudgement(100, 0, "x", "yes")]                  # not a detector: ignored
    table = table1(verdicts, characteristic, judgements)
    assert (table.detectors, table.characteristic_detectors) == (91, 49)
    assert (table.audible_clips, table.clips_judged, table.characteristic_clips_judged) == (1194, 2730, 1470)
    assert [value for _, value in table.rows()] == ["91", "49", "43.7%", "81.2%"]


def test_table1_without_sound_judgements_has_no_rates():
    table = table1([verdict(0, "dog", 0.9)], {"dog": True}, [])
    assert (table.detectors, table.characteristic_detectors) == (1, 1)
    assert table.videos_with_object_sound is None and table.characteristic_sound_rate is None
    assert table.rows()[2] == ("Videos with object sound", "n/a")


def test_clip_audibility_majority_ignores_unsure_and_ties():
    judgements = [ClipJudgement(1, 0, "a", "yes"), ClipJudgement(1, 0, "b", "unsure"),
                  ClipJudgement(1, 1, "a", "yes"), ClipJudgement(1, 1, "b", "no"),
                  ClipJudgement(1, 2, "a", "unsure"),
                  ClipJudgement(1, 3, "a", "no"), ClipJudgement(1, 3, "b", "no"),
                  ClipJudgement(1, 3, "c", "yes")]
    assert clip_audibility(judgements) == {(1, 0): True, (1, 3): False}
    with pytest.raises(ValueError):
        ClipJudgement(1, 0, "a", "loud")


def test_detector_histogram_sorted_by_count_then_name():
    verdicts = [verdict(0, "person", 0.9), verdict(1, "sea", 0.9), verdict(2, "person", 0.7),
                verdict(3, "baby", 0.8), verdict(4, "car", 0.2), verdict(5, None)]
    assert list(detector_histogram(verdicts).items()) == [("person", 2), ("baby", 1), ("sea", 1)]


def test_detectors_by_threshold_is_monotone_and_matches_the_verdicts_at_the_setting():
    verdicts = [aggregate_unit(u, [UnitAnswer(n, "yes", "dog", frozenset(range(6 * u)))
                                   for n in "abc"]) for u in range(11)]
    verdicts.append(verdict(99, "dog", 1.0, unresolved=True))        # unresolved: never counted
    thresholds = [0.0, 0.5, 0.6, 0.9, 1.0]
    counts = detectors_by_threshold(verdicts, thresholds)
    assert counts == [11, 6, 5, 2, 1]
    assert counts[2] == sum(v.is_detector for v in verdicts)


def test_automatic_agreement_compares_detector_labels():
    verdicts = [verdict(0, "dog", 0.9), verdict(1, "cat", 0.9), verdict(2, "dog", 0.1),
                verdict(3, None), verdict(4, "dog", 0.9, unresolved=True), verdict(5, "sea", 0.9)]
    automatic = {0: "dog", 1: "dog", 2: None, 3: None, 4: "dog"}   # unit 5 has no automatic label
    result = automatic_agreement(verdicts, automatic)
    assert (result.compared, result.agreed) == (4, 3)
    assert result.rate == pytest.approx(0.75)
    assert automatic_agreement(verdicts, {}).rate is None
