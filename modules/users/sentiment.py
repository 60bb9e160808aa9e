"""The sentiment of a message: VADER's compound score (vaderSentiment, a lexicon- and
rule-based analyser tuned for short social-media text), -1 (negative) .. 1 (positive).

Computed once when feedback is stored (reads stay cheap); `label` follows VADER's
recommended thresholds, as the generated column `user_message.sentiment_label` does.
"""

from __future__ import annotations

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

POSITIVE, NEGATIVE = 0.05, -0.05


class Sentiment:
    """One analyser (its lexicon loads in ~15 ms): keep one per process."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        return round(self._vader.polarity_scores(text)["compound"], 4)


def label(score: float | None) -> str | None:
    if score is None:
        return None
    if score >= POSITIVE:
        return "positive"
    return "negative" if score <= NEGATIVE else "neutral"
