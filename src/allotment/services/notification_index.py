"""The live notification rules in memory, by type and feature, and what one firing is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from allotment.domain.notifications import RuleType, Threshold
from allotment.storage.notifications_repo import RuleRecord


@dataclass(frozen=True, slots=True)
class Firing:
    """One rule firing for one entitlement: the mark it takes and the event it writes."""

    rule: RuleRecord
    mark: str
    period_start: datetime
    threshold: Threshold | None = None


@dataclass
class RuleIndex:
    """The live, enabled rules in memory, by type and feature (refreshed on change)."""

    version: tuple[int, int] = (-1, -1)
    threshold_any: list[RuleRecord] = field(default_factory=list)
    threshold_by_feature: dict[str, list[RuleRecord]] = field(default_factory=dict)
    reset_any: list[RuleRecord] = field(default_factory=list)
    reset_by_feature: dict[str, list[RuleRecord]] = field(default_factory=dict)
    _distinct: dict[str, list[Threshold]] = field(default_factory=dict)

    @classmethod
    def build(cls, version: tuple[int, int], live: Iterable[RuleRecord]) -> RuleIndex:
        index = cls(version)
        for r in live:
            if r.disabled or r.deleted_at is not None:
                continue
            any_, by = (
                (index.threshold_any, index.threshold_by_feature)
                if r.type is RuleType.BALANCE_THRESHOLD
                else (index.reset_any, index.reset_by_feature)
            )
            if r.feature_ids is None:
                any_.append(r)
            else:
                for fid in r.feature_ids:
                    by.setdefault(fid, []).append(r)
        return index

    @property
    def empty(self) -> bool:
        return not (
            self.threshold_any or self.threshold_by_feature or self.reset_any
            or self.reset_by_feature
        )  # fmt: skip

    def for_feature(self, feature_id: str) -> tuple[list[RuleRecord], list[RuleRecord]]:
        """(threshold rules, reset rules) that apply to entitlements of this feature."""
        return (
            self.threshold_any + self.threshold_by_feature.get(feature_id, []),
            self.reset_any + self.reset_by_feature.get(feature_id, []),
        )

    def thresholds_for(self, feature_id: str) -> list[Threshold]:
        """The distinct thresholds of every threshold rule applying to this feature."""
        found = self._distinct.get(feature_id)
        if found is None:
            keys: dict[str, Threshold] = {}
            for r in self.for_feature(feature_id)[0]:
                for t in r.thresholds:
                    keys.setdefault(t.key, t)
            found = self._distinct[feature_id] = list(keys.values())
        return found

    def watched_features(self) -> set[str] | None:
        """Feature ids some rule applies to; None: every feature."""
        if self.threshold_any or self.reset_any:
            return None
        return set(self.threshold_by_feature) | set(self.reset_by_feature)
