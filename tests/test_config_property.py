"""Property: any value in any config field either validates or fails with one line naming the field."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from frost.config import Config, config_from_dict
from frost.errors import ConfigError

FIELDS = [
    (section.name, f.name)
    for section in dataclasses.fields(Config)
    for f in dataclasses.fields(getattr(Config(), section.name))
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4), st.floats()), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=4))
@example([(("data", "test_size"), 1)])  # found by this test: the overlap message named only data.test_start
def test_random_config_values_validate_or_fail_in_one_line(assignments):
    values: dict[str, dict[str, object]] = {}
    for (section, name), value in assignments:
        values.setdefault(section, {})[name] = value
    try:
        config = config_from_dict(values)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message
        assert any(f"{s}.{n}" in message or n in message for s, n in values_fields(values)), message
        return
    for section, name in values_fields(values):  # what validates is usable: no NaN or infinite numbers
        value = getattr(getattr(config, section), name)
        if isinstance(value, float) and name != "max_grad_norm":
            assert math.isfinite(value), (section, name, value)


def values_fields(values: dict[str, dict[str, object]]) -> list[tuple[str, str]]:
    return [(s, n) for s, fields in values.items() for n in fields]


def test_numbers_written_without_a_dot_are_numbers():
    from frost.config import load_config

    config = load_config(None, ["optim.lr=3e-5", "frost.tau=1e-4", "train.beta=2E-1"])
    assert (config.optim.lr, config.frost.tau, config.train.beta) == (3e-5, 1e-4, 0.2)
