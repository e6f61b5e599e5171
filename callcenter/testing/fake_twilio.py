"""A local stand-in for Twilio's REST API, for tests that drive the real ``twilio`` client.

Point ``TwilioConfig.api_base`` at :attr:`FakeTwilio.base_url` and the real client (through
``TwilioLine``'s rebasing HTTP client) sends its requests here instead of ``https://api.twilio.com``.
Every request is recorded as sent (method, path, form parameters with repeats kept, basic-auth
credentials); the Calls and Messages resources answer 201 in Twilio's documented JSON shape, wrong
credentials get Twilio's 401 (error 20003), and :meth:`FakeTwilio.fail_next` scripts an API error.

WhatsApp goes through the same Messages resource with ``whatsapp:``-prefixed addresses; the recorder
checks the documented shape: both ``To`` and ``From`` must be ``whatsapp:+E.164`` (a mixed pair is
Twilio's error 21910), and a ``StatusCallback`` must be an absolute http(s) URL. :meth:`FakeTwilio.report`
then plays Twilio's status callback for a message: the documented form fields, signed like Twilio signs.

:func:`sign` computes the ``X-Twilio-Signature`` Twilio would send with a webhook, so tests can play
Twilio calling our endpoints.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

API_VERSION = "2010-04-01"
WHATSAPP = "whatsapp:"
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def sign(url: str, params: Mapping[str, str] | Sequence[tuple[str, str]], auth_token: str) -> str:
    """The ``X-Twilio-Signature`` Twilio computes for a webhook to ``url`` with these form params."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    signature: str = RequestValidator(auth_token).compute_signature(url, MultiDict(pairs))
    return signature


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    #: Form parameters in the order sent (a repeated key, like StatusCallbackEvent, appears repeatedly).
    form: tuple[tuple[str, str], ...]
    #: (username, password) of the Basic Authorization header, or None when absent or malformed.
    auth: tuple[str, str] | None
    headers: Mapping[str, str]

    def param(self, name: str) -> str:
        """The single value of ``name`` (KeyError if absent)."""
        values = self.params(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.form if k == name]


@dataclass
class _Failure:
    status: int
    code: int
    message: str


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "0" * 31 + "1"
    auth_token: str = "fake-auth-token-0123456789abcdef"
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    #: Called with every request as it is recorded (the demo prints the texts it "sends").
    on_request: Callable[[Recorded], None] | None = None

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._failures: list[_Failure] = []
        self._counter = itertools.count(1)
        self._sids: list[tuple[Recorded, str]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app_env(self, public_url: str, from_number: str = "+15005550006") -> dict[str, str]:
        """Environment for an app process that texts and calls through this recorder; ``public_url`` is
        where links and webhooks point (the app itself, in end-to-end tests)."""
        return {
            "CALLCENTER_TWILIO_ACCOUNT_SID": self.account_sid,
            "CALLCENTER_TWILIO_AUTH_TOKEN": self.auth_token,
            "CALLCENTER_TWILIO_FROM_NUMBER": from_number,
            "CALLCENTER_TWILIO_API_BASE": self.base_url,
            "CALLCENTER_TWILIO_PUBLIC_URL": public_url,
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- scripting -------------------------------------------------------------------------------------

    def fail_next(self, status: int = 400, code: int = 21211, message: str = "Invalid 'To' Phone Number") -> None:
        """Answer the next authenticated resource request with this Twilio API error."""
        self._failures.append(_Failure(status, code, message))

    def calls(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/Calls.json")]

    def messages(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/Messages.json")]

    def created(self) -> list[tuple[Recorded, str]]:
        """Messages the API accepted, each with the SID it answered."""
        return [(r, sid) for r, sid in self._sids]

    async def report(self, sid: str, status: str, *, error_code: str = "", auth_token: str | None = None) -> int:
        """Play Twilio's status callback for message ``sid``: POST the documented fields to the
        ``StatusCallback`` it was created with, signed (with ``auth_token`` to forge one); the HTTP status."""
        request = next(r for r, s in self._sids if s == sid)
        url = request.param("StatusCallback")
        to, from_ = request.param("To"), request.param("From")
        fields = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("From", from_),
            ("MessageSid", sid),
            ("MessageStatus", status),
            ("SmsSid", sid),
            ("SmsStatus", status),
            ("To", to),
        ]
        if to.startswith(WHATSAPP):
            fields.append(("ChannelPrefix", "whatsapp"))
        if error_code:
            fields.append(("ErrorCode", error_code))
        signature = sign(url, fields, auth_token or self.auth_token)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=fields, headers={"X-Twilio-Signature": signature}) as resp,
        ):
            return resp.status

    # -- the API ---------------------------------------------------------------------------------------

    @staticmethod
    def _basic_auth(header: str) -> tuple[str, str] | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method in ("POST", "PUT") else MultiDict[str]()
        pairs = tuple((k, v) for k, v in form.items() if isinstance(v, str))
        auth = self._basic_auth(request.headers.get("Authorization", ""))
        recorded = Recorded(request.method, request.path, pairs, auth, dict(request.headers))
        self.requests.append(recorded)
        if self.on_request is not None:
            self.on_request(recorded)
        if auth != (self.account_sid, self.auth_token):
            return self._error(401, 20003, "Authenticate")
        prefix = f"/{API_VERSION}/Accounts/{self.account_sid}/"
        if not request.path.startswith(prefix):
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        resource = request.path[len(prefix) :]
        if request.method != "POST" or resource not in ("Calls.json", "Messages.json"):
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        if self._failures:
            failure = self._failures.pop(0)
            return self._error(failure.status, failure.code, failure.message)
        params = dict(pairs)
        if resource == "Calls.json":
            for name in ("To", "From"):
                if not params.get(name):
                    return self._error(400, 21201 if name == "To" else 21213, f"No '{name}' number is specified")
            if not params.get("Twiml") and not params.get("Url") and not params.get("ApplicationSid"):
                return self._error(400, 21205, "Url parameter is required.")
            return web.json_response(self._call(params), status=201)
        for name in ("To", "Body"):
            if not params.get(name):
                return self._error(400, 21604 if name == "To" else 21602, f"A '{name}' is required.")
        refused = self._check_message(params)
        if refused is not None:
            return refused
        body = self._message(params)
        self._sids.append((self.requests[-1], body["sid"]))
        return web.json_response(body, status=201)

    def _check_message(self, params: Mapping[str, str]) -> web.Response | None:
        """The documented shape of a WhatsApp or SMS message request (addresses, callback URL)."""
        to, from_ = params["To"], params.get("From", "")
        if to.startswith(WHATSAPP) != from_.startswith(WHATSAPP):
            return self._error(400, 21910, "Invalid From and To pair. From and To should be of the same channel")
        for name, value in (("To", to), ("From", from_)):
            if not _E164.match(value.removeprefix(WHATSAPP)):
                return self._error(400, 21211 if name == "To" else 21212, f"Invalid '{name}' Phone Number: {value}")
        callback = params.get("StatusCallback")
        if callback is not None and not re.match(r"^https?://[^/\s]+/", callback):
            return self._error(400, 21609, "Invalid StatusCallback url")
        return None

    def _sid(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter):04x}{secrets.token_hex(14)}"

    def _call(self, params: Mapping[str, str]) -> dict[str, Any]:
        sid = self._sid("CA")
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "date_created": now,
            "date_updated": now,
            "to": params["To"],
            "to_formatted": params["To"],
            "from": params["From"],
            "from_formatted": params["From"],
            "phone_number_sid": "PN" + "0" * 32,
            "status": "queued",
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
            },
        }

    def _message(self, params: Mapping[str, str]) -> dict[str, Any]:
        sid = self._sid("SM")
        now = format_datetime(datetime.now(UTC), usegmt=True)
        body = params["Body"]
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "messaging_service_sid": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "to": params["To"],
            "from": params.get("From"),
            "body": body,
            "status": "queued",
            "num_segments": "1" if params["To"].startswith(WHATSAPP) else str(max(1, -(-len(body) // 153))),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": API_VERSION,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {"media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"},
        }


__all__ = ["FakeTwilio", "Recorded", "sign"]
