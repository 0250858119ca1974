"""Submit validation: the inline fast path accepts and rejects exactly what the explaining
helpers (``_number``, ``_name``) do, for any JSON value in any field (property-based)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import validation as v
from taskqueue import jsonutil

NOW_MS = 1_700_000_000_000

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=2),
                        st.dictionaries(st.text(max_size=3), json_scalars, max_size=2))
names = st.one_of(st.sampled_from(["default", "emails", "a.b:c-d_e", "", "a b", "x" * 201,
                                   "emails\n", "x" * 200 + "\n"]),
                  json_values)
numbers = st.one_of(st.sampled_from([0, 1, 9, 10, -1, 0.5, 3.0, 1000, 1001, 86400, 86401,
                                     0.001, 0.0005, 604800, 604801]), json_values)


def reference_task_spec(spec: dict) -> dict:
    """Field checks spelled out with the slow helpers only (the rules before the fast path)."""
    out = {
        "id": v._name(spec, "id", v.TASK_ID),
        # null means "absent" for every field (before the fast path, an explicit null queue
        # slipped through as None and failed later inside apply as INTERNAL)
        "queue": v._name(spec, "queue", v.NAME) or "default",
        "priority": v._number(spec, "priority", minimum=0, maximum=9, integer=True, default=0),
        "max_retries": v._number(spec, "max_retries", minimum=0, maximum=1000, integer=True,
                                 default=3),
        "timeout_secs": v._number(spec, "timeout_secs", minimum=0.001, maximum=86400 * 7,
                                  integer=False),
        "retry_backoff_secs": v._number(spec, "retry_backoff_secs", minimum=0, maximum=86400,
                                        integer=False, default=1.0),
    }
    return out


def outcome(fn, spec):
    try:
        return "ok", fn(spec)
    except v.Invalid as exc:
        return "invalid", exc.message


@settings(max_examples=400, deadline=None)
@given(id_=names, queue=names, priority=numbers, max_retries=numbers, timeout=numbers,
       backoff=numbers)
def test_fast_path_matches_the_explaining_helpers(id_, queue, priority, max_retries, timeout,
                                                  backoff):
    spec = {"type": "t", "id": id_, "queue": queue, "priority": priority,
            "max_retries": max_retries, "timeout_secs": timeout, "retry_backoff_secs": backoff}
    fast_kind, fast = outcome(lambda s: v.task_spec(s, NOW_MS, 1 << 20), spec)
    ref_kind, ref = outcome(reference_task_spec, spec)
    assert fast_kind == ref_kind, (spec, fast, ref)
    if fast_kind == "invalid":
        assert fast == ref  # the same field named, the same explanation
        return
    for field, expected in ref.items():
        if field == "id" and expected is None:
            assert len(fast["id"]) == 32  # generated
            continue
        got = fast[field]
        assert got == expected or (isinstance(got, float) and math.isnan(got)
                                   and math.isnan(expected)), field


@pytest.mark.parametrize("spec, field", [
    ({"type": "t", "priority": True}, "priority"),
    ({"type": "t", "priority": 1.0}, "priority"),
    ({"type": "t", "timeout_secs": float("nan")}, "timeout_secs"),
    ({"type": "t", "timeout_secs": float("inf")}, "timeout_secs"),
    ({"type": "t", "retry_backoff_secs": "1"}, "retry_backoff_secs"),
    ({"type": "t", "queue": "a\x00b"}, "queue"),
    ({"type": "t", "id": 7}, "id"),
    ({"type": "t", "bogus": 1}, "bogus"),
    ({"type": ""}, "type"),
])
def test_bad_fields_are_named(spec, field):
    with pytest.raises(v.Invalid) as err:
        v.task_spec(spec, NOW_MS, 1 << 20)
    assert err.value.message.startswith(field + ":")


# ------------------------------------------------------------- depth, whole-string names, size
# (issue 10: a 300-deep payload froze a Raft node; "emails\n" was a queue name; 900 x 1e5 was
# stored as 8.1 KB under a 4 KB limit)

def nested(depth: int, leaf=0):
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    return 0


json_trees = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=2), inner, max_size=3)),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(tree=json_trees, limit=st.integers(min_value=0, max_value=8))
def test_too_deep_matches_the_reference_depth(tree, limit):
    assert v.too_deep(tree, limit) == (reference_depth(tree) > limit)


@pytest.mark.parametrize("depth, ok", [(1, True), (64, True), (65, False), (300, False)])
def test_payload_and_result_depth_limit(depth, ok):
    spec = {"type": "t", "payload": nested(depth)}
    if ok:
        assert v.task_spec(spec, NOW_MS, 1 << 20)["payload"] == spec["payload"]
        assert v.json_value(nested(depth), "result") == nested(depth)
        return
    with pytest.raises(v.Invalid) as err:
        v.task_spec(spec, NOW_MS, 1 << 20)
    assert err.value.code == "BADREQ" and err.value.message.startswith("payload:")
    assert "64" in err.value.message
    with pytest.raises(v.Invalid, match="^result:"):
        v.json_value(nested(depth), "result")


@pytest.mark.parametrize("field, value", [
    ("id", "abc\n"), ("queue", "emails\n"), ("id", "abc\n\n"), ("queue", "a\nb")])
def test_names_must_match_as_a_whole(field, value):
    with pytest.raises(v.Invalid, match=f"^{field}:"):
        v.task_spec({"type": "t", field: value}, NOW_MS, 1 << 20)
    with pytest.raises(v.Invalid):
        (v.task_id if field == "id" else lambda x: v.queue_name(x["queue"]))({field: value})


def test_the_stored_size_is_what_is_checked():
    raw = '{"type":"t","payload":[' + ",".join(["1e5"] * 900) + "]}"
    spec = v.parse_json(raw)
    assert len(raw) < 4096 and len(jsonutil.dumps(spec["payload"])) > 8000
    with pytest.raises(v.Invalid) as err:
        v.task_spec(spec, NOW_MS, 4096, len(raw))
    assert err.value.code == "TOOLARGE"


exponent_numbers = st.builds(
    lambda sign, mantissa, e, exp: f"{sign}{mantissa}{e}{exp}",
    st.sampled_from(["", "-"]), st.sampled_from(["1", "9", "1.5", "0.1", "12", "0"]),
    st.sampled_from(["e", "E", "e+", "e-", "E-"]), st.integers(min_value=0, max_value=330))


@settings(max_examples=500, deadline=None)
@given(numbers_=st.lists(st.one_of(exponent_numbers, st.integers().map(str),
                                   st.floats(allow_nan=False, allow_infinity=False).map(repr)),
                         min_size=1, max_size=20))
def test_no_json_text_grows_past_GROWTH_when_stored(numbers_):
    """Why a request under 1/GROWTH of the limit need not be re-encoded (the fast path)."""
    for text in ["[" + ",".join(numbers_) + "]", numbers_[0]]:
        try:
            value = jsonutil.loads(text)
        except jsonutil.JSONDecodeError:
            continue  # out of range: refused at parse time
        assert len(jsonutil.dumps(value)) <= v.GROWTH * len(text), text
