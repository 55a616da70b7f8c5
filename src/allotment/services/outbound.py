"""Where outbound webhooks may go: http(s) to public addresses only, unless the operator
allows private ones (docs/notifications.md, "Delivery")."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from allotment.domain import notifications as rules

Resolver = Callable[[str], list[str]]
"""Host name → IP addresses (``socket.getaddrinfo`` by default; tests may inject one)."""


def resolve_host(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class OutboundPolicy:
    """Where webhooks may go: ``allow_private`` lets URLs resolve to loopback and private
    ranges (``ALLOTMENT_WEBHOOK_ALLOW_PRIVATE=1``, ``notifications.allowPrivateAddresses``)."""

    allow_private: bool = False
    resolve: Resolver = field(default=resolve_host)

    def refusal(self, url: str) -> str | None:
        """Why ``url`` must not be called (None: allowed)."""
        host = urlsplit(url).hostname or ""
        if self.allow_private:
            return None
        addresses = self.resolve(host)
        if not addresses:
            return f"host {host!r} does not resolve"
        for ip in addresses:
            why = rules.refused_address(ip)
            if why is not None:
                return (
                    f"host {host!r} resolves to the {why} address {ip}; set "
                    "ALLOTMENT_WEBHOOK_ALLOW_PRIVATE=1 to allow private receivers"
                )
        return None
