"""Console accounts and login sessions: who may log in, and which browser is whom.

Passwords are kept only as argon2id hashes. Hashing is deliberately slow and memory-hungry, and the
same event loop also answers Asterisk's AGI requests for 112 calls, so every hash and verify runs in
a worker thread, and at most a few at once (a burst of logins must not eat every core or gigabytes of
RAM). Session cookies carry a random token; the table holds only its SHA-256, so a leaked database
dump does not hand out live sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store.engine import Store, utcnow
from callcenter.store.models import User, WebSession
from callcenter.store.roles import LANGUAGES, ROLES

USERNAME_RE = re.compile(r"[a-z0-9._-]{2,64}")
#: A queue member interface as Asterisk names it (``PJSIP/taker1``, ``Local/2001@agents/n``). It ends
#: up in AMI actions, so no whitespace or control characters can get through.
INTERFACE_RE = re.compile(r"[A-Za-z0-9]{2,16}/[A-Za-z0-9._@:/+-]{1,47}")
MIN_PASSWORD = 10
#: Longer inputs are refused without hashing: nobody types that much, and argon2 would still read it all.
MAX_PASSWORD = 1024
#: A session's ``last_seen_at``/``expires_at`` move forward at most this often: one write a minute per
#: active console instead of one per request.
SLIDE_EVERY = timedelta(minutes=1)
#: ``secrets.token_urlsafe(32)`` gives 43 characters; anything far off that is not ours.
#: Signal topic of ended sessions (a logout, a deactivated account, on any node or from the CLI): every
#: node checks its open consoles' sessions at once instead of at its next periodic check.
SESSIONS_TOPIC = "sessions"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    display_name: str
    role: str
    language: str
    interface: str | None
    agency: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "language": self.language,
            "interface": self.interface,
            "agency": self.agency,
        }


class AccountError(ValueError):
    """Input that cannot become (or change) an account; ``fields`` maps each bad field to why.

    ``conflict`` marks a clash with an existing account (a taken username or interface), which the
    web layer reports as 409 rather than 422.
    """

    def __init__(self, fields: dict[str, str], *, conflict: bool = False) -> None:
        self.fields = fields
        self.conflict = conflict
        super().__init__("; ".join(f"{name}: {why}" for name, why in fields.items()))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        language=user.language,
        interface=user.interface,
        agency=user.agency,
    )


def normalise_username(username: str) -> str:
    """Usernames are case-insensitive for people (``Ayu`` logs in as ``ayu``); stored lower-case."""
    return username.strip().lower()


def _clean_text(value: str) -> str:
    """Trim and drop control characters: names end up in logs and on other people's screens."""
    value = unicodedata.normalize("NFC", value).strip()
    return "".join(ch for ch in value if unicodedata.category(ch)[0] != "C")


def _optional(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


class Accounts:
    """Users and their passwords, on top of the :class:`Store` (every query goes through its retried
    ``transaction``); their login sessions are ``sessions`` (:class:`WebSessions`)."""

    def __init__(
        self,
        store: Store,
        *,
        session_lifetime: timedelta = timedelta(hours=12),
        session_max: timedelta | None = None,
        hasher: PasswordHasher | None = None,
        hash_concurrency: int | None = None,
    ) -> None:
        self.store = store
        self.sessions = WebSessions(
            store, lifetime=session_lifetime, max_age=session_max if session_max is not None else session_lifetime
        )
        #: argon2id with argon2-cffi's defaults (RFC 9106 "low memory": t=3, m=64 MiB, p=4).
        self.hasher = hasher or PasswordHasher()
        # Each hash holds ~64 MiB and a core for tens of milliseconds: a few at a time is plenty for
        # a shift change and leaves the rest of the machine to call routing.
        self._slots = asyncio.Semaphore(hash_concurrency or max(1, min(4, os.cpu_count() or 1)))
        self._dummy_hash: str | None = None

    # -- passwords --------------------------------------------------------------------------------

    async def _hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, encoded: str, password: str) -> bool:
        async with self._slots:
            try:
                return await asyncio.to_thread(self.hasher.verify, encoded, password)
            except (VerificationError, InvalidHashError):
                return False

    async def _dummy(self) -> str:
        """A hash with the current parameters to verify against when the username is unknown, so
        that a wrong username costs the same time as a wrong password (no user enumeration)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- users ------------------------------------------------------------------------------------

    def _validate(
        self,
        username: str,
        display_name: str,
        password: str,
        role: str,
        language: str,
        interface: str | None,
        agency: str | None,
    ) -> tuple[str, str, str | None, str | None]:
        fields: dict[str, str] = {}
        username = normalise_username(username)
        if not USERNAME_RE.fullmatch(username):
            fields["username"] = "2 to 64 characters: lower-case letters, digits, dot, underscore, hyphen"
        display_name = _clean_text(display_name)
        if not display_name:
            fields["display_name"] = "required"
        elif len(display_name) > 128:
            fields["display_name"] = "at most 128 characters"
        if len(password) < MIN_PASSWORD:
            fields["password"] = f"at least {MIN_PASSWORD} characters"
        elif len(password) > MAX_PASSWORD:
            fields["password"] = f"at most {MAX_PASSWORD} characters"
        if role not in ROLES:
            fields["role"] = f"one of {', '.join(ROLES)}"
        if language not in LANGUAGES:
            fields["language"] = f"one of {', '.join(LANGUAGES)}"
        interface = _optional(interface)
        if interface is not None and not INTERFACE_RE.fullmatch(interface):
            fields["interface"] = "an Asterisk interface such as PJSIP/taker1"
        agency = _optional(agency)
        if agency is not None:
            agency = _clean_text(agency)
            if len(agency) > 64:
                fields["agency"] = "at most 64 characters"
        if fields:
            raise AccountError(fields)
        return username, display_name, interface, agency

    async def create_user(
        self,
        username: str,
        display_name: str,
        password: str,
        role: str,
        language: str = "id",
        interface: str | None = None,
        agency: str | None = None,
    ) -> UserInfo:
        """Add an account; :class:`AccountError` (a ``ValueError``) names every bad or taken field."""
        username, display_name, interface, agency = self._validate(
            username, display_name, password, role, language, interface, agency
        )
        encoded = await self._hash(password)

        async def op(session: AsyncSession) -> UserInfo:
            taken: dict[str, str] = {}
            if await session.scalar(select(User.id).where(User.username == username)) is not None:
                taken["username"] = f"{username!r} is already taken"
            if interface is not None and (
                await session.scalar(select(User.id).where(User.interface == interface)) is not None
            ):
                taken["interface"] = f"{interface!r} already belongs to another user"
            if taken:
                raise AccountError(taken, conflict=True)
            user = User(
                username=username,
                display_name=display_name,
                password_hash=encoded,
                role=role,
                language=language,
                interface=interface,
                agency=agency,
                active=True,
                created_at=utcnow(),
            )
            session.add(user)
            await session.flush()
            return _info(user)

        try:
            return await self.store.transaction("create_user", op)
        except IntegrityError:  # a concurrent create won the race between our check and insert
            raise AccountError({"username": "username or interface already in use"}, conflict=True) from None

    async def authenticate(self, username: str, password: str) -> UserInfo | None:
        """The active user with these credentials, or None; the same work whether or not the user exists."""
        username = normalise_username(username)
        dummy = await self._dummy()  # made before the lookup, so even the first miss costs one verify

        async def op(session: AsyncSession) -> User | None:
            return await session.scalar(select(User).where(User.username == username))

        plausible = len(password) <= MAX_PASSWORD and USERNAME_RE.fullmatch(username) is not None
        user = await self.store.transaction("find_user", op) if plausible else None
        if user is None:
            await self._verify(dummy, password[:MAX_PASSWORD])
            return None
        if not await self._verify(user.password_hash, password) or not user.active:
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            await self._rehash(user.id, password)
        return _info(user)

    async def _rehash(self, user_id: int, password: str) -> None:
        """Upgrade a hash made with older parameters, now that we briefly know the password."""
        encoded = await self._hash(password)

        async def op(session: AsyncSession) -> None:
            await session.execute(update(User).where(User.id == user_id).values(password_hash=encoded))

        await self.store.transaction("rehash_password", op)

    async def list_users(self) -> list[UserInfo]:
        async def op(session: AsyncSession) -> Sequence[User]:
            return (await session.scalars(select(User).order_by(User.username))).all()

        return [_info(u) for u in await self.store.transaction("list_users", op)]

    async def get_user(self, user_id: int) -> UserInfo | None:
        async def op(session: AsyncSession) -> User | None:
            return await session.get(User, user_id)

        user = await self.store.transaction("get_user", op)
        return None if user is None else _info(user)

    async def set_language(self, user_id: int, language: str) -> UserInfo:
        """Change the UI language; LookupError if the user is gone."""
        if language not in LANGUAGES:
            raise AccountError({"language": f"one of {', '.join(LANGUAGES)}"})

        async def op(session: AsyncSession) -> UserInfo:
            user = await session.get(User, user_id)
            if user is None:
                raise LookupError(f"no user {user_id}")
            user.language = language
            return _info(user)

        return await self.store.transaction("set_language", op)

    async def set_active(self, user_id: int, active: bool) -> UserInfo:
        """(De)activate an account; deactivating deletes its sessions in the same transaction.
        LookupError if there is no such user."""

        async def op(session: AsyncSession) -> UserInfo:
            user = await session.get(User, user_id)
            if user is None:
                raise LookupError(f"no user {user_id}")
            user.active = active
            if not active:
                await session.execute(delete(WebSession).where(WebSession.user_id == user_id))
            return _info(user)

        info = await self.store.transaction("set_active", op)
        if not active:
            await self.store.signals.changed(SESSIONS_TOPIC, user_id)
        return info

    async def user_id_of(self, username: str) -> int | None:
        async def op(session: AsyncSession) -> int | None:
            return await session.scalar(select(User.id).where(User.username == normalise_username(username)))

        return await self.store.transaction("user_id_of", op)


class WebSessions:
    """Login sessions (``web_sessions``): which browser is whom, for how long. A cookie's token is random;
    only its SHA-256 is stored. Reached as ``Accounts.sessions``."""

    def __init__(self, store: Store, *, lifetime: timedelta, max_age: timedelta) -> None:
        self.store = store
        #: Idle lifetime: a session ends this long after its last request...
        self.lifetime = lifetime
        #: ...and at the latest this long after it began (absolute; a shift), however busy it is.
        self.max_age = max_age

    async def create(self, user_id: int, remote: str | None) -> tuple[str, str]:
        """A fresh ``(token, csrf_token)``; the token goes into the cookie and only its hash is stored."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()

        async def op(session: AsyncSession) -> None:
            session.add(
                WebSession(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + min(self.lifetime, self.max_age),
                    remote=(remote or "")[:64] or None,
                )
            )

        await self.store.transaction("create_session", op)
        return token, csrf

    async def resolve(self, token: str) -> tuple[UserInfo, str] | None:
        """The user and CSRF token behind a cookie, or None; expired sessions are deleted on sight.

        The expiry slides with use (``lifetime`` after the last request, never beyond
        ``max_age`` after the login), but is written at most once per :data:`SLIDE_EVERY` so
        that a busy console does not write on every request.
        """
        if not _TOKEN_RE.fullmatch(token):
            return None
        key = token_hash(token)

        async def op(session: AsyncSession) -> tuple[UserInfo, str] | None:
            row = (
                await session.execute(
                    select(WebSession, User)
                    .join(User, User.id == WebSession.user_id)
                    .where(WebSession.token_hash == key)
                )
            ).one_or_none()
            if row is None:
                return None
            web_session, user = row
            now = utcnow()
            if web_session.expires_at <= now or web_session.created_at + self.max_age <= now or not user.active:
                await session.delete(web_session)
                return None
            if now - web_session.last_seen_at >= SLIDE_EVERY:
                web_session.last_seen_at = now
                web_session.expires_at = min(now + self.lifetime, web_session.created_at + self.max_age)
            return _info(user), web_session.csrf_token

        return await self.store.transaction("resolve_session", op)

    async def live(self, keys: Collection[str]) -> set[str]:
        """Which of these sessions (token hashes) are still valid: present, not expired, their user
        active. One query for every open WebSocket at once (``web/live.py`` asks every few seconds)."""
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        now = utcnow()

        async def op(session: AsyncSession) -> set[str]:
            alive: set[str] = set()
            for start in range(0, len(wanted), 500):
                rows = await session.scalars(
                    select(WebSession.token_hash)
                    .join(User, User.id == WebSession.user_id)
                    .where(
                        WebSession.token_hash.in_(wanted[start : start + 500]),
                        WebSession.expires_at > now,
                        WebSession.created_at > now - self.max_age,
                        User.active.is_(True),
                    )
                )
                alive.update(rows)
            return alive

        return await self.store.transaction("live_sessions", op)

    async def delete(self, token: str) -> None:
        key = token_hash(token)

        async def op(session: AsyncSession) -> None:
            await session.execute(delete(WebSession).where(WebSession.token_hash == key))

        await self.store.transaction("delete_session", op)
        await self.store.signals.changed(SESSIONS_TOPIC, "logout")

    async def purge_expired(self) -> int:
        """Drop sessions past their expiry (those never presented again are not deleted on sight)."""
        now = utcnow()

        async def op(session: AsyncSession) -> int:
            result = await session.execute(delete(WebSession).where(WebSession.expires_at <= now))
            return int(getattr(result, "rowcount", 0) or 0)

        return await self.store.transaction("purge_sessions", op)
