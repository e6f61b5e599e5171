"""Storage of calls, their timelines and number flags (SQLAlchemy 2 async; SQLite by default, PostgreSQL by URL)."""

from callcenter.store.calls import CallerHistory, Calls, FlagRecord
from callcenter.store.engine import Store, StoreUnavailable, new_call_id, utcnow

__all__ = ["CallerHistory", "Calls", "FlagRecord", "Store", "StoreUnavailable", "new_call_id", "utcnow"]
