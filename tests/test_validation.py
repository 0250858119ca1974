"""Submit validation: the inline fast path accepts and rejects exactly what the explaining
helpers (``_number``, ``_name``) do, for any JSON value in any field (property-based)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import validation as v

NOW_MS = 1_700_000_000_000

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.one_of(json_scalars, st.lists(json_scalars, max_size=2),
                        st.dictionaries(st.text(max_size=3), json_scalars, max_size=2))
names = st.one_of(st.sampled_from(["default", "emails", "a.b:c-d_e", "", "a b", "x" * 201]),
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
