"""Settings read from the environment: the fold bound (``ALLOTMENT_FOLD_MAX_LAG``)."""

from __future__ import annotations

import pytest


def test_the_fold_bound_from_the_environment_at_n_and_n_plus_1() -> None:
    from allotment.config import ConfigError, Settings, apply_env, validate
    from allotment.domain import limits

    assert apply_env(Settings(), {}).fold_max_lag == limits.FOLD_MAX_LAG_DEFAULT == 200_000
    for n in (0, limits.FOLD_MAX_LAG_MAX):
        s = apply_env(Settings(), {"ALLOTMENT_FOLD_MAX_LAG": str(n)})
        validate(s)
        assert s.fold_max_lag == n
    for bad in (-1, limits.FOLD_MAX_LAG_MAX + 1):
        with pytest.raises(ConfigError, match="ALLOTMENT_FOLD_MAX_LAG must be between 0 and"):
            validate(apply_env(Settings(), {"ALLOTMENT_FOLD_MAX_LAG": str(bad)}))
    with pytest.raises(ConfigError, match="ALLOTMENT_FOLD_MAX_LAG"):
        apply_env(Settings(), {"ALLOTMENT_FOLD_MAX_LAG": "lots"})


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("ALLOTMENT_PORT", "eighty", "a whole number"),
        ("ALLOTMENT_DB_POOL_MAX_SIZE", "1.5", "a whole number"),
        ("ALLOTMENT_HTTP_BODY_TIMEOUT", "soon", "a number"),
        ("ALLOTMENT_AUTH_CACHE_SECONDS", "", "a number"),
    ],
)
def test_a_number_that_does_not_parse_names_its_variable(name: str, value: str, kind: str) -> None:
    from allotment.config import ConfigError, Settings, apply_env

    with pytest.raises(ConfigError, match=f"environment: {name} must be {kind}, got '{value}'"):
        apply_env(Settings(), {name: value})
