"""The one name for "this is allowed, but not this many times": the web answers it with 429."""

from __future__ import annotations


class QuotaExceeded(Exception):
    """A quota (drafts, agency updates and photos, call-backs, rating texts) is used up; the message
    says which. Not bad input and not a conflict with the record's state: asking again later or for
    something else works."""


__all__ = ["QuotaExceeded"]
