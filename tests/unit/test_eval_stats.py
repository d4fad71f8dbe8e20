"""The gate statistic: paired bootstrap CI, seeded; no false alarms, planted drops caught."""

from __future__ import annotations

import random

import pytest

from llmops.evals.stats import paired_bootstrap, regressed

MAX_DROP = 0.02  # the shipped suites' default


def _binary(n: int, accuracy: float, rng: random.Random) -> list[float]:
    return [1.0 if rng.random() < accuracy else 0.0 for _ in range(n)]


@pytest.mark.parametrize("seed", range(20))
def test_identical_versions_never_fail_across_20_seeds(seed: int) -> None:
    rng = random.Random(seed)
    scores = [rng.choice([0.0, 0.5, 1.0]) for _ in range(50)]
    ci = paired_bootstrap(scores, list(scores), seed=seed)
    assert (ci.mean, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not regressed(ci, MAX_DROP, "confident_drop")
    assert not regressed(ci, MAX_DROP, "non_inferiority")


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("flipped", [8, 7])  # 15 points of 50 examples is 7.5
def test_a_planted_15_point_drop_on_50_examples_fails(seed: int, flipped: int) -> None:
    rng = random.Random(seed)
    baseline = _binary(50, 0.85, rng)
    while sum(baseline) < flipped + 5:
        baseline = _binary(50, 0.85, rng)
    right = [i for i, s in enumerate(baseline) if s == 1.0]
    candidate = list(baseline)
    for i in rng.sample(right, flipped):
        candidate[i] = 0.0
    ci = paired_bootstrap(candidate, baseline, seed=seed)
    assert ci.mean == pytest.approx(-flipped / 50)
    assert regressed(ci, MAX_DROP, "confident_drop"), ci


def test_equal_quality_with_independent_noise_false_alarm_rate_is_nominal() -> None:
    # Two equally good prompts whose mistakes fall on different examples: the
    # confident-drop rule at 95% should alarm in about 2.5% of such comparisons or less.
    alarms = 0
    trials = 200
    for seed in range(trials):
        rng = random.Random(1000 + seed)
        baseline, candidate = _binary(50, 0.8, rng), _binary(50, 0.8, rng)
        ci = paired_bootstrap(candidate, baseline, seed=seed, n_resamples=1000)
        alarms += regressed(ci, MAX_DROP, "confident_drop")
    assert alarms <= 0.05 * trials, alarms


def test_the_same_seed_gives_the_same_interval_and_another_may_not() -> None:
    rng = random.Random(3)
    baseline, candidate = _binary(40, 0.8, rng), _binary(40, 0.7, rng)
    first = paired_bootstrap(candidate, baseline, seed=11)
    assert paired_bootstrap(candidate, baseline, seed=11) == first
    assert first.low < first.mean < first.high


def test_non_inferiority_is_stricter_than_confident_drop() -> None:
    baseline = [1.0] * 25 + [0.0] * 25
    candidate = [0.0, 1.0] * 25  # same mean, different examples
    ci = paired_bootstrap(candidate, baseline, seed=0)
    assert not regressed(ci, MAX_DROP, "confident_drop")
    assert regressed(ci, MAX_DROP, "non_inferiority")


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([1.0], [1.0, 0.0])
