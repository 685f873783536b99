from shoplake.collector.app import split_body
from shoplake.collector.limits import TokenBucket, match_key


def test_split_body_forms():
    assert split_body(b'[{"a":1}, {"b":2}]') == [b'{"a":1}', b'{"b":2}']
    assert split_body(b' {"batch": [{"a":1}]}') == [b'{"a":1}']
    assert split_body(b'{"event_type": "page_view"}') == [b'{"event_type": "page_view"}']
    assert split_body(b'[{"a":1}, {"b":') is None
    assert split_body(b"hello") is None


def test_token_bucket_allows_burst_then_tells_the_wait():
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k", now=0.0) == 0.5
    assert bucket.take("k", now=0.5) == 0.0  # refilled one token
    assert bucket.take("other", now=0.0) == 0.0  # per key


def test_match_key():
    assert match_key("b", ("a", "b")) == "b"
    assert match_key("c", ("a", "b")) is None
    assert match_key("", ("a",)) is None
