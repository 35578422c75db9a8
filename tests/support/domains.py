"""Generated domain names for length-limit tests."""

from __future__ import annotations


def domain_of_length(length: int) -> str:
    """A valid domain name of exactly ``length`` octets, labels of at most 63."""
    labels: list[str] = []
    remaining = length
    while remaining > 0:
        size = min(63, remaining)
        if remaining - size == 1:  # never leave room for only a dot
            size -= 2
        labels.append("a" * size)
        remaining -= size + 1
    domain = ".".join(labels)
    assert len(domain) == length
    return domain
