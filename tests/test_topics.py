import pytest

from shoplake.core.platform.topics import DLQ_TOPIC, EVENTS_TOPIC, load_topics, parse_retention


def test_declared_topics():
    topics = load_topics()
    assert topics[EVENTS_TOPIC].partitions == 6
    assert topics[EVENTS_TOPIC].retention_ms == 7 * 86_400_000
    assert topics[DLQ_TOPIC].partitions == 3
    assert topics[DLQ_TOPIC].retention_ms == 30 * 86_400_000
    assert "shop.alerts" in topics
    assert all(t.configs["cleanup.policy"] in ("delete", "compact") for t in topics.values())


def test_retention_parsing():
    assert parse_retention("2h") == 7_200_000
    assert parse_retention("-1") == -1
    with pytest.raises(ValueError, match="<n>d"):
        parse_retention("a week")
