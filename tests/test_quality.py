"""annotation/quality.py: per-annotator gold accuracy, agreement with the consensus, time and skips."""
from __future__ import annotations

import random

import pytest

from annotation.quality import (DOUBTFUL_MIN_WRONG, DoubtHistory, GivenAnswer, GoldAnswer, annotator_quality,
                                gold_from_truth, is_doubtful)


def test_a_random_answerer_scores_below_a_truthful_one_on_gold():
    rng = random.Random(3)
    labels = ["no", "texture", "yes:dog", "yes:person"]
    truth = {unit: rng.choice(labels) for unit in range(100)}
    gold = {unit: GoldAnswer(truth[unit]) for unit in range(0, 100, 10)}
    answers = [GivenAnswer("truthful", u, truth[u], seconds=20.0 + u % 3) for u in truth]
    answers += [GivenAnswer("random", u, rng.choice(labels), seconds=2.0) for u in truth]
    rows = {row.name: row for row in annotator_quality(answers, gold, consensus={u: truth[u] for u in truth})}
    assert rows["truthful"].gold_accuracy == 1.0 and rows["truthful"].gold_answered == 10
    assert rows["random"].gold_accuracy < 0.6
    assert rows["truthful"].agreement == 1.0 and rows["random"].agreement < 0.5
    assert rows["truthful"].median_seconds == 21.0 and rows["random"].median_seconds == 2.0
    assert rows["truthful"].answers == 100


def test_marks_on_gold_are_scored_by_overlap_and_skips_are_counted():
    gold = {1: GoldAnswer("yes:dog", frozenset({0, 1, 2, 3})), 2: GoldAnswer("no")}
    answers = [GivenAnswer("ann", 1, "yes:dog", frozenset({0, 1})), GivenAnswer("ann", 2, "no"),
               GivenAnswer("bob", 1, "yes:cat", frozenset({0, 1, 2, 3})), GivenAnswer("bob", 2, "yes:dog")]
    rows = {row.name: row for row in annotator_quality(answers, gold, consensus={}, skips={"ann": 2, "cy": 1})}
    assert rows["ann"].gold_marks == pytest.approx(0.5) and rows["ann"].gold_accuracy == 1.0
    assert rows["bob"].gold_marks is None and rows["bob"].gold_accuracy == 0.0   # wrong object: marks not scored
    assert rows["ann"].skips == 2 and rows["cy"].answers == 0 and rows["cy"].skips == 1
    assert rows["ann"].agreement is None and rows["ann"].as_dict()["gold_answered"] == 2


def test_gold_from_the_truth_takes_only_sure_units():
    rows = [{"unit": 0, "category": "waterfall", "precision": 0.95}, {"unit": 1, "category": "crowd", "precision": 0.6},
            {"unit": 2, "category": "tree", "precision": 0.1}, {"unit": 3, "category": None, "precision": 0.0}]
    gold = gold_from_truth(rows)
    assert gold == {0: GoldAnswer("yes:waterfall"), 2: GoldAnswer("no"), 3: GoldAnswer("no")}
    with pytest.raises(ValueError, match="no_precision < yes_precision"):
        gold_from_truth(rows, yes_precision=0.2, no_precision=0.5)


def test_gold_from_the_truth_keeps_a_balanced_sample_when_limited():
    rows = [{"unit": u, "category": "waterfall", "precision": 0.95} for u in range(30)]
    rows += [{"unit": 100 + u, "category": "tree", "precision": 0.05} for u in range(50)]
    gold = gold_from_truth(rows, limit=10)
    assert len(gold) == 10 and sum(g.label == "no" for g in gold.values()) == 5
    assert gold == gold_from_truth(rows, limit=10)                       # seeded
    assert len(gold_from_truth(rows[:3] + rows[30:], limit=10)) == 10    # 3 yes, 7 no
    assert len(gold_from_truth(rows)) == 80


def test_doubtful_on_gold_means_below_the_bar_with_more_than_one_slip():
    assert not is_doubtful(right=0, answered=1)                           # one slip, however early
    assert not is_doubtful(right=3, answered=4)                           # one slip of four: 75%
    assert is_doubtful(right=0, answered=DOUBTFUL_MIN_WRONG)              # wrong on the first two
    assert is_doubtful(right=2, answered=4)                               # 50%
    assert not is_doubtful(right=7, answered=10)                          # exactly 70%: not below
    assert is_doubtful(right=3, answered=4, min_wrong=1, accuracy=0.8)
    with pytest.raises(ValueError, match="min_wrong"):
        is_doubtful(right=0, answered=1, min_wrong=0)
    with pytest.raises(ValueError, match="accuracy"):
        DoubtHistory([], accuracy=1.5)


def test_the_doubt_history_says_who_was_doubtful_before_each_answer():
    ann = [(13, True), (10, False), (11, True), (12, False)]           # 1 right of 3 by her answer 12: doubtful
    ann += [(sequence, True) for sequence in (20, 21, 22, 23)]          # 5 right of 7 by answer 22: no longer
    history = DoubtHistory([("ann", sequence, right) for sequence, right in ann] + [("bob", 5, False)])
    assert not history.doubtful("ann", before=12) and history.doubtful("ann", before=13)
    assert history.doubtful("ann", before=22) and not history.doubtful("ann", before=23)
    assert not history.doubtful("ann") and not history.doubtful("bob") and not history.doubtful("nobody")
