"""The collector's pure parts: splitting bodies whatever they hold, rate limits, key checks."""

import gzip
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoplake.collector.body import MAX_DEPTH, BodyError, gunzip, split_body
from shoplake.collector.limits import RateLimits, TokenBucket, match_key


def test_split_body_forms():
    assert split_body(b'[{"a":1}, {"b":2}]').events == [b'{"a":1}', b'{"b":2}']
    assert split_body(b' {"batch": [{"a":1}]}').events == [b'{"a":1}']
    single = split_body(b'{"event_type": "page_view"}')
    assert single.events == [b'{"event_type": "page_view"}'] and single.single
    for bad in (b'[{"a":1}, {"b":', b"hello", b"", b"1"):
        with pytest.raises(BodyError) as err:
            split_body(bad)
        assert err.value.reason == "malformed_json"


def test_a_deep_event_is_marked_and_its_neighbours_are_split():
    """Guards the depth bound: ~970 levels used to overflow the splitter and lose the batch."""
    ev = json.dumps({"a": 1}).encode()
    deep = b'{"x":' + b"[" * 970 + b"]" * 970 + b"}"
    split = split_body(b"[" + ev + b"," + deep + b"," + ev + b"]")
    assert split.events[0] == ev and split.events[2] == ev and split.too_deep == {1}
    envelope = split_body(b'{"sentAt": "x", "batch": [' + deep + b"," + ev + b"]}")
    assert envelope.events[1] == ev and envelope.too_deep == {0}
    lone = split_body(deep)
    assert lone.single and lone.too_deep == {0}
    shallow = b'{"x":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert split_body(b"[" + shallow + b"]").too_deep == set()


def test_a_body_that_repeats_batch_is_refused():
    """Guards finding 6: the first batch used to be dropped silently with a 200."""
    with pytest.raises(BodyError) as err:
        split_body(b'{"batch": [{"a": 1}], "batch": [{"b": 2}]}')
    assert err.value.reason == "duplicate_key" and "batch" in str(err.value)
    # a "batch" inside an event is not the envelope's
    assert len(split_body(b'[{"title": "batch", "batch": 1}, {"batch": 2}]').events) == 2


def test_gzip_is_inflated_within_the_limit():
    body = json.dumps([{"a": i} for i in range(100)]).encode()
    assert gunzip(gzip.compress(body), 1 << 20) == body
    with pytest.raises(OverflowError):
        gunzip(gzip.compress(b"0" * (2 << 20)), 1 << 20)  # a zip bomb is refused, not inflated
    with pytest.raises(BodyError) as err:
        gunzip(b"not gzip at all", 1 << 20)
    assert err.value.reason == "malformed_gzip"
    with pytest.raises(BodyError):
        gunzip(gzip.compress(body)[:-10], 1 << 20)  # truncated


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_split_or_refused_with_a_reason(body):
    try:
        split = split_body(body)
    except BodyError as exc:
        assert exc.reason in ("malformed_json", "duplicate_key")
    else:
        assert all(isinstance(e, bytes) for e in split.events)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, max_size=8))
def test_an_array_splits_into_its_elements(values):
    body = json.dumps(values).encode()
    assert [json.loads(e) for e in split_body(body).events] == values


def test_token_bucket_allows_burst_then_tells_the_wait():
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("k", now=0.0) == 0.5
    assert bucket.take("k", now=0.5) == 0.0  # refilled one token
    assert bucket.take("other", now=0.0) == 0.0  # per key
    assert bucket.take("k", cost=10, now=100.0) == float("inf")  # more than a burst: never


def test_events_are_limited_and_one_client_gets_a_share_of_a_key():
    """Guards finding 6: the limit counted requests, so one client of a shared key could send
    500-event batches and starve the key's other clients."""
    limits = RateLimits(requests=1000, request_burst=1000, events=1000, client_share=0.5)
    assert limits.take_events("key", "abuser", 500) == 0.0
    assert limits.take_events("key", "abuser", 500) == 0.0  # its share (2 s burst) is 1000
    assert limits.take_events("key", "abuser", 500) > 0  # over its share
    assert limits.take_events("key", "user", 400) == 0.0  # the key's others still get through
    assert limits.take_events("other-key", "abuser", 500) == 0.0  # keys are apart


def test_the_client_buckets_stay_bounded():
    bucket = TokenBucket(rate=1.0, burst=1, max_names=100)
    for i in range(1000):
        bucket.take(f"client-{i}", now=float(i))
    assert len(bucket._state) <= 101


def test_match_key():
    assert match_key("b", ("a", "b")) == "b"
    assert match_key("c", ("a", "b")) is None
    assert match_key("", ("a",)) is None
