"""Dawid-Skene and Krippendorff's alpha (annotation/consensus.py): a hand-made crowd whose answer is known,
a simulated one where the EM must beat the majority, and crowd-kit's result where crowd-kit is installed."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from annotation.aggregate import Settlement, UnitAnswer
from annotation.consensus import consensus_estimate, consensus_verdicts, dawid_skene, krippendorff_alpha, unit_labels


def majority(item: dict[str, str]) -> str:
    return Counter(item.values()).most_common(1)[0][0]


def hand_made_crowd() -> tuple[list[dict[str, str]], list[str]]:
    """Three careful annotators and two who always say "yes:dog" on 30 units; then 10 "no" units judged by
    one careful annotator and both yes-sayers, where the majority is wrong."""
    truth = ["no" if i % 2 else "yes:dog" for i in range(30)] + ["no"] * 10
    items = [{"ann": t, "bob": t, "cat": t, "spam1": "yes:dog", "spam2": "yes:dog"} for t in truth[:30]]
    items += [{"ann": t, "spam1": "yes:dog", "spam2": "yes:dog"} for t in truth[30:]]
    return items, truth


def test_dawid_skene_recovers_the_known_answer_where_the_majority_does_not():
    items, truth = hand_made_crowd()
    estimate = dawid_skene(items)
    assert estimate.labels == truth
    assert [majority(item) for item in items][30:] == ["yes:dog"] * 10          # the plain majority is fooled
    assert estimate.accuracy("ann") > 0.95 and estimate.accuracy("bob") > 0.95
    assert estimate.accuracy("spam1") < 0.6                                       # right only when truth is dog
    confusion = estimate.confusions[estimate.workers.index("spam1")]
    no, dog = estimate.classes.index("no"), estimate.classes.index("yes:dog")
    assert confusion[no, dog] > 0.9 and confusion[dog, dog] > 0.9                 # says dog whatever it sees


def simulated_crowd(seed: int, n_items: int = 300):
    rng = np.random.default_rng(seed)
    classes = ["no", "texture", "yes:dog", "yes:person", "yes:waterfall"]
    truth = rng.choice(classes, size=n_items, p=[0.5, 0.1, 0.15, 0.15, 0.1])
    skill = {"d1": 0.9, "d2": 0.85, "d3": 0.9, "c1": 0.6, "s1": 0.0, "s2": 0.0}    # s*: uniform at random
    items = []
    for t in truth:
        judges = rng.choice(list(skill), size=3, replace=False)
        item = {}
        for judge in judges:
            item[judge] = t if rng.random() < skill[judge] else str(rng.choice(classes))
        items.append(item)
    return items, list(truth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_beats_the_majority_on_a_crowd_with_spammers(seed):
    items, truth = simulated_crowd(seed)
    estimate = dawid_skene(items)
    ds = np.mean([a == b for a, b in zip(estimate.labels, truth)])
    mv = np.mean([majority(item) == t for item, t in zip(items, truth)])
    assert ds >= mv
    assert min(estimate.accuracy(w) for w in ("d1", "d2", "d3")) > max(estimate.accuracy(w) for w in ("s1", "s2"))


def test_gold_units_anchor_annotators_who_swap_the_answers():
    """Two of three annotators swap "no" and "yes:dog": plain EM believes the majority they make; six gold units
    teach the consensus their confusion, and it reads every other unit right."""
    truth = ["no" if i % 3 else "yes:dog" for i in range(60)]
    swap = {"no": "yes:dog", "yes:dog": "no"}
    items = [{"ann": t, "liar1": swap[t], "liar2": swap[t]} for t in truth]
    assert dawid_skene(items).labels == [swap[t] for t in truth]
    assert consensus_estimate(items[6:]).labels == [swap[t] for t in truth[6:]]          # no gold: fooled too
    anchored = consensus_estimate(items[6:], list(zip(truth[:6], items[:6])))
    assert anchored.labels == truth[6:]
    assert anchored.posteriors.shape[0] == 54                                             # gold left out
    with pytest.raises(ValueError, match="known items"):
        dawid_skene(items, known={60: "no"})


def bench_like_crowd(seed: int, spammers: int) -> tuple[list[dict[str, str]], list[str]]:
    """bench_crowd's crowd in miniature: 230 units, 41 detectors of few (mostly one or two) categories; ten
    annotators, `spammers` of them at random or always "yes:person", the rest three diligent (95%) to one careless
    (65%), wrong answers spread over every label; three judges a unit."""
    rng = np.random.default_rng(seed)
    categories = ["waterfall", "crowd", "baby", "person", "boat", "dog", "car", "bird", "sea", "train", "engine"]
    labels = ["no", "texture", *(f"yes:{c}" for c in categories)]
    truth = ["no"] * 189 + [f"yes:{c}" for c in rng.choice(categories[:7], size=41, p=[.5, .2, .1, .08, .04, .04, .04])]
    truth = list(rng.permutation(truth))
    kinds = ["random", "yes-person"][:spammers] + ["random"] * max(spammers - 2, 0)
    kinds += ["careless"] * ((10 - spammers) // 4)
    kinds += ["diligent"] * (10 - len(kinds))

    def answer(kind: str, t: str) -> str:
        if kind == "yes-person":
            return "yes:person"
        if kind != "random" and rng.random() < (0.95 if kind == "diligent" else 0.65):
            return t
        return str(rng.choice([label for label in labels if label != t or kind == "random"]))

    items = [{f"{kinds[j]}{j}": answer(kinds[j], t) for j in rng.choice(10, size=3, replace=False)} for t in truth]
    return items, truth


def test_the_consensus_counts_detectors_near_the_truth_where_plain_em_overcounts():
    """With 20% spammers and 10% of the units gold, over eight crowds: the consensus (its prior, anchored on gold)
    keeps the detector count near the truth's (median error within 6%, none beyond 15%); plain EM overfits the rare
    categories' confusion rows and counts over 30% too many in every crowd."""
    errors = []
    for seed in range(8):
        items, truth = bench_like_crowd(seed, spammers=2)
        gold = range(0, 230, 10)
        counted = [i for i in range(230) if i not in gold]
        true_count = sum(truth[i] != "no" for i in counted)
        plain = dawid_skene([items[i] for i in counted]).labels
        ours = consensus_estimate([items[i] for i in counted], [(truth[i], items[i]) for i in gold]).labels
        assert sum(label.startswith("yes:") for label in plain) > 1.3 * true_count
        errors.append(sum(label.startswith("yes:") for label in ours) / true_count - 1)
        assert np.mean([a == truth[i] for a, i in zip(ours, counted)]) > 0.95
    assert np.median(np.abs(errors)) <= 0.06 and max(np.abs(errors)) <= 0.15


def test_unit_answers_become_labels_with_the_object_named():
    answers = {7: [UnitAnswer("ann", "yes", "dog"), UnitAnswer("bob", "no")], 3: [UnitAnswer("ann", "texture")]}
    assert unit_labels(answers) == ([3, 7], [{"ann": "texture"}, {"ann": "yes:dog", "bob": "no"}])


def test_dawid_skene_agrees_with_crowd_kit():
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    import pandas as pd
    items, _ = simulated_crowd(5)
    frame = pd.DataFrame([(i, w, label) for i, item in enumerate(items) for w, label in item.items()],
                         columns=["task", "worker", "label"])
    theirs = crowdkit.DawidSkene(n_iter=100).fit_predict(frame).sort_index()
    ours = dawid_skene(items).labels
    assert np.mean([ours[i] == theirs[i] for i in theirs.index]) >= 0.98


def test_krippendorff_alpha_matches_the_reference_example_and_brackets_it():
    # Krippendorff's reliability-data example (3 coders, 15 units, missing values), nominal alpha 0.691.
    rows = [[None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
            [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
            [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4]]
    items = [{f"coder{c}": str(rows[c][u]) for c in range(3) if rows[c][u] is not None} for u in range(15)]
    result = krippendorff_alpha(items, resamples=300)
    assert result.alpha == pytest.approx(0.691, abs=1e-3)
    assert result.low <= result.alpha <= result.high and result.high - result.low > 0.05
    assert result.n_units == 12                                 # the units two or more coders labelled
    perfect = krippendorff_alpha([{"a": "no", "b": "no"}, {"a": "yes:dog", "b": "yes:dog"}] * 5, resamples=50)
    assert perfect.alpha == pytest.approx(1.0)
    assert krippendorff_alpha([{"a": "no"}, {"a": "no", "b": "no"}]) is None


def test_dawid_skene_verdicts_overrule_the_fooled_majority_and_keep_the_namers_marks():
    items, truth = hand_made_crowd()
    marks = frozenset(range(40))                                   # 40 of 60 images: a detector at 60%
    answers = {u: [UnitAnswer(name, *(("yes", label[4:]) if label.startswith("yes:") else (label,)),
                              marked=marks if label.startswith("yes:") else frozenset())
                   for name, label in item.items()] for u, item in enumerate(items)}
    majority_verdicts = consensus_verdicts(answers, "majority")
    ds_verdicts = consensus_verdicts(answers, "dawid-skene")
    assert sum(v.is_detector for v in majority_verdicts) == 15 + 10           # the 10 spammed "no" units count
    assert sum(v.is_detector for v in ds_verdicts) == 15 + 0
    assert [v.answer for v in ds_verdicts] == [t.split(":")[0] for t in truth]
    assert all(v.precision == pytest.approx(40 / 60) for v in ds_verdicts if v.answer == "yes")
    settled = consensus_verdicts(answers, "dawid-skene", settlements={35: Settlement("yes", "dog")})
    assert settled[35].category == "dog" and settled[35].settled
    with pytest.raises(ValueError, match="consensus must be one of"):
        consensus_verdicts(answers, "mean")
