"""The simulator's pure logic: token counting, answers, truncation, faults."""

from __future__ import annotations

from collections import Counter

import pytest

from llmops.sim import Profile, complete, count_message_tokens, count_tokens
from llmops.sim.config import LatencyDist
from llmops.sim.engine import FaultInjector, Stats, split_tokens

PROSE = (
    "The gateway routes every request to a provider, retries transient failures and "
    "records the cost of each call in the request log."
)


def _messages(text: str = PROSE) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": text},
    ]


def test_count_tokens_is_plausible_for_english() -> None:
    words = len(PROSE.split())
    tokens = count_tokens(PROSE)
    # Real tokenizers give ~1.3 tokens per English word.
    assert words <= tokens <= 2 * words
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0


def test_split_tokens_round_trips_any_text() -> None:
    for text in (PROSE, "  indented\n\n\tcode(x) == 42;  ", "naïve café — déjà vu", "🙂🙂 ok"):
        pieces = split_tokens(text)
        assert "".join(pieces) == text
        assert len(pieces) == count_tokens(text)


def test_long_words_cost_more_tokens() -> None:
    assert count_tokens("internationalization") == 3
    assert count_tokens("cat") == 1


def test_prompt_tokens_add_per_message_overhead() -> None:
    one = [{"role": "user", "content": "hi"}]
    two = [{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]
    assert count_message_tokens(one) == 3 + 4 + 1
    assert count_message_tokens(two) - count_message_tokens(one) == 4 + 1
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert count_message_tokens(parts) == count_message_tokens(one)


def test_same_request_gives_same_answer_and_different_requests_differ() -> None:
    profile = Profile()
    first = complete("gpt-4o", _messages(), profile)
    again = complete("gpt-4o", _messages(), profile)
    assert first == again
    assert first.text
    assert complete("gpt-4o", _messages("Something else."), profile).text != first.text
    assert complete("gpt-4o-mini", _messages(), profile).text != first.text


def test_answer_length_stays_within_profile_bounds() -> None:
    profile = Profile(min_output_tokens=10, max_output_tokens=20)
    lengths = {
        complete("m", _messages(f"question {i}"), profile).completion_tokens for i in range(50)
    }
    assert min(lengths) >= 10
    assert max(lengths) <= 20
    assert len(lengths) > 3  # the length varies with the request
    for i in range(20):
        answer = complete("m", _messages(f"question {i}"), profile)
        assert count_tokens(answer.text) == answer.completion_tokens
        assert answer.finish_reason == "stop"


def test_generated_answers_read_as_sentences() -> None:
    profile = Profile(min_output_tokens=2, max_output_tokens=40)
    for i in range(300):
        text = complete("m", _messages(f"q{i}"), profile).text
        assert text[0].isupper()
        assert text.endswith(".")
        assert ".." not in text
        assert "  " not in text


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    profile = Profile(min_output_tokens=30, max_output_tokens=30)
    full = complete("m", _messages(), profile)
    cut = complete("m", _messages(), profile, max_tokens=7)
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 7
    assert full.text.startswith(cut.text)
    assert count_tokens(cut.text) == 7
    roomy = complete("m", _messages(), profile, max_tokens=100)
    assert roomy.finish_reason == "stop"
    assert roomy.text == full.text


def test_reasoning_tokens_count_toward_completion_and_cap() -> None:
    profile = Profile(min_output_tokens=10, max_output_tokens=10, reasoning_tokens=50)
    answer = complete("o4-mini", _messages(), profile)
    assert answer.reasoning_tokens == 50
    assert answer.completion_tokens == 60
    assert answer.usage()["completion_tokens_details"] == {"reasoning_tokens": 50}
    capped = complete("o4-mini", _messages(), profile, max_tokens=55)
    assert (capped.completion_tokens, capped.finish_reason) == (55, "length")
    assert capped.reasoning_tokens == 50
    assert count_tokens(capped.text) == 5
    starved = complete("o4-mini", _messages(), profile, max_tokens=20)
    assert (starved.text, starved.reasoning_tokens, starved.finish_reason) == ("", 20, "length")


def test_cached_tokens_follow_ratio() -> None:
    answer = complete("m", _messages(), Profile(cached_tokens_ratio=0.5))
    assert answer.cached_tokens == answer.prompt_tokens // 2
    usage = answer.usage()
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": answer.cached_tokens}


def test_response_rules_first_match_wins_then_echo() -> None:
    profile = Profile.model_validate(
        {
            "responses": [
                {"match": r"(?i)\bping\b", "reply": "pong"},
                {"match": "ping|sentiment", "reply": "second rule"},
            ],
            "echo": True,
        }
    )
    assert complete("m", _messages("PING please"), profile).text == "pong"
    assert complete("m", _messages("what sentiment?"), profile).text == "second rule"
    echoed = complete("m", _messages("repeat after me"), profile)
    assert echoed.text == "repeat after me"
    assert echoed.completion_tokens == count_tokens("repeat after me")


def test_rules_match_the_last_user_message_only() -> None:
    profile = Profile.model_validate({"responses": [{"match": "ping", "reply": "pong"}]})
    messages = [
        {"role": "user", "content": "ping"},
        {"role": "assistant", "content": "pong"},
        {"role": "user", "content": "something else"},
    ]
    assert complete("m", messages, profile).text != "pong"


def test_fail_first_fails_exactly_n_requests_per_model() -> None:
    profile = Profile.model_validate({"fail_first": {"n": 2, "status": 503}})
    faults = FaultInjector(seed=0)
    statuses = [faults.decide("a", profile).status for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert faults.decide("b", profile).status == 503  # counted per model
    faults.reset(seed=0)
    assert faults.decide("a", profile).status == 503


def test_seeded_error_rates_are_reproducible_and_close_to_configured() -> None:
    profile = Profile.model_validate({"errors": {429: 0.2, 500: 0.1}, "hang_rate": 0.05})

    def run(seed: int) -> list[tuple[int, bool]]:
        faults = FaultInjector(seed)
        return [(d.status, d.hang) for d in (faults.decide("m", profile) for _ in range(4000))]

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    counts = Counter(first)
    assert 0.17 < counts[(429, False)] / 4000 < 0.23
    assert 0.08 < counts[(500, False)] / 4000 < 0.12
    assert 0.03 < counts[(200, True)] / 4000 < 0.07
    assert 0.60 < counts[(200, False)] / 4000 < 0.70


def test_latency_samples_follow_distribution() -> None:
    faults = FaultInjector(seed=1)
    fixed = LatencyDist.model_validate(25)
    assert faults.sample_ms(fixed) == 25.0
    uniform = LatencyDist(dist="uniform", min=10, max=20)
    assert all(10 <= faults.sample_ms(uniform) <= 20 for _ in range(200))
    lognormal = LatencyDist(dist="lognormal", median=100, p95=300)
    samples = sorted(faults.sample_ms(lognormal) for _ in range(4000))
    assert 90 < samples[2000] < 110
    assert 260 < samples[3800] < 340
    clipped = LatencyDist(dist="lognormal", median=100, p95=300, max=150)
    assert max(faults.sample_ms(clipped) for _ in range(500)) == 150


def test_lognormal_from_mean_matches_the_mean() -> None:
    faults = FaultInjector(seed=3)
    dist = LatencyDist(dist="lognormal", mean=100, p95=200)
    samples = [faults.sample_ms(dist) for _ in range(20000)]
    assert 95 < sum(samples) / len(samples) < 105


def test_stats_count_by_model_and_outcome() -> None:
    stats = Stats()
    stats.record("a", 200)
    stats.record("a", 429)
    stats.record("a", 200)
    stats.record("b", "hang")
    stats.record_tokens("a", 10, 5)
    snap = stats.snapshot()
    assert snap["total"] == 4
    assert snap["models"]["a"] == {
        "requests": 3,
        "by_status": {"200": 2, "429": 1},
        "prompt_tokens": 10,
        "completion_tokens": 5,
    }
    assert snap["models"]["b"]["by_status"] == {"hang": 1}


@pytest.mark.parametrize("seed", [0, 5])
def test_latency_draws_do_not_shift_fault_sequence(seed: int) -> None:
    profile = Profile.model_validate({"errors": {429: 0.3}})
    plain, busy = FaultInjector(seed), FaultInjector(seed)
    slow = LatencyDist(dist="uniform", min=1, max=2)
    seq_plain, seq_busy = [], []
    for _ in range(200):
        seq_plain.append(plain.decide("m", profile).status)
        seq_busy.append(busy.decide("m", profile).status)
        busy.sample_ms(slow)
    assert seq_plain == seq_busy
