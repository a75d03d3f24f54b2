"""What an identity may do: the ``[[auth.grants]]`` turned into one lookup.

A grant gives a role some actions on some AE titles (``"*"``: all of them). An identity may do
what any of its roles is granted; nothing else. Roles nobody granted anything are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rst.auth.settings import Action, GrantConfig

__all__ = ["ANY_AE", "Grants"]

ANY_AE = "*"


@dataclass(frozen=True)
class Grants:
    """role → AE title (or ``*``) → actions."""

    table: dict[str, dict[str, frozenset[Action]]]

    @classmethod
    def of(cls, grants: Iterable[GrantConfig]) -> Grants:
        table: dict[str, dict[str, frozenset[Action]]] = {}
        for grant in grants:
            per_ae = table.setdefault(grant.role, {})
            for aet in grant.aets:
                per_ae[aet] = per_ae.get(aet, frozenset()) | frozenset(grant.allow)
        return cls(table)

    def actions(self, roles: Iterable[str], aet: str) -> frozenset[Action]:
        """What *roles* together may do on the archive *aet*."""
        allowed: frozenset[Action] = frozenset()
        for role in roles:
            per_ae = self.table.get(role)
            if per_ae is not None:
                allowed |= per_ae.get(aet, frozenset()) | per_ae.get(ANY_AE, frozenset())
        return allowed

    def allows(self, roles: Iterable[str], aet: str, action: Action) -> bool:
        return action in self.actions(roles, aet)
