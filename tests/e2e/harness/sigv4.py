"""Verification of AWS Signature Version 4, as Alternator does it.

Why: the filter under test sits between the SDK and Alternator.  Alternator,
with authorization enforced, recomputes every request's SigV4 signature from
what it *received*: the ``Host`` header, every header listed in
``SignedHeaders``, and the exact body bytes.  A proxy that rewrites Host,
re-encodes the body, or adds/changes/drops a signed header breaks every
request.  The simulated nodes therefore verify signatures exactly this way,
so that any such mistake by the proxy shows up as a failed test, with a
reason.

This is written from the SigV4 specification (AWS General Reference,
"Create a signed AWS API request"), not by calling botocore's signer, so
that the test does not share a bug with the client that produced the
signature.  Steps:

1. Parse ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/
   SERVICE/aws4_request, SignedHeaders=h1;h2, Signature=HEX``.
2. Canonical request::

       METHOD \\n CANONICAL_URI \\n CANONICAL_QUERY \\n
       CANONICAL_HEADERS \\n SIGNED_HEADERS \\n HEX(SHA256(body))

   where canonical headers are ``name:value\\n`` for each signed header
   (lowercased name, value trimmed and whitespace runs collapsed to one
   space, several occurrences joined by ``,``; a signed header absent from
   the request contributes an empty value).
3. String to sign::

       AWS4-HMAC-SHA256 \\n X-Amz-Date \\n DATE/REGION/SERVICE/aws4_request \\n
       HEX(SHA256(canonical request))

4. Signing key: HMAC chain ``"AWS4"+secret`` -> date -> region -> service ->
   ``aws4_request``; signature = HEX(HMAC(key, string to sign)), compared
   in constant time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"

#: DynamoDB error types (``__type`` suffixes) used for failures.
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"
INVALID_SIGNATURE = "InvalidSignatureException"
MISSING_TOKEN = "MissingAuthenticationTokenException"

#: How far X-Amz-Date may be from our clock, as in Alternator and AWS.
DEFAULT_MAX_SKEW = _dt.timedelta(minutes=15)

_WS_RUN = re.compile(r"\s+")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class ParsedAuthorization:
    """The parts of an ``AWS4-HMAC-SHA256`` Authorization header."""

    access_key: str
    date: str          # YYYYMMDD from the credential scope
    region: str
    service: str
    terminator: str    # must be "aws4_request"
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


@dataclass(frozen=True)
class SigV4Result:
    """Outcome of a verification.

    ``ok`` is True only for a valid signature.  Otherwise ``error_type`` is
    the DynamoDB error name a server would answer with and ``reason`` says
    in words what was wrong.  ``canonical_request`` and ``string_to_sign``
    are filled in once parsing succeeded, to help debug a mismatch.
    """

    ok: bool
    reason: str = ""
    error_type: str | None = None
    access_key: str | None = None
    signed_headers: tuple[str, ...] = ()
    canonical_request: str | None = field(default=None, repr=False)
    string_to_sign: str | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.ok


class AuthorizationParseError(ValueError):
    pass


def parse_authorization(value: str) -> ParsedAuthorization:
    """Parse an ``AWS4-HMAC-SHA256`` Authorization header value.

    Components may be separated by ``,`` with optional spaces and may come in
    any order; each of Credential, SignedHeaders and Signature must appear
    exactly once.
    """
    value = value.strip()
    algorithm, sep, rest = value.partition(" ")
    if not sep:
        raise AuthorizationParseError("Authorization header has no components")
    if algorithm != ALGORITHM:
        raise AuthorizationParseError(f"unsupported algorithm {algorithm!r}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        if not eq:
            raise AuthorizationParseError(f"malformed component {item!r}")
        name = name.strip()
        if name in parts:
            raise AuthorizationParseError(f"duplicate component {name!r}")
        parts[name] = val.strip()
    for needed in ("Credential", "SignedHeaders", "Signature"):
        if needed not in parts:
            raise AuthorizationParseError(f"missing {needed}")
    cred = parts["Credential"].split("/")
    if len(cred) != 5 or not all(cred):
        raise AuthorizationParseError(f"malformed Credential {parts['Credential']!r}")
    access_key, date, region, service, terminator = cred
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not all(signed):
        raise AuthorizationParseError(f"malformed SignedHeaders {parts['SignedHeaders']!r}")
    if not _HEX64.match(parts["Signature"]):
        raise AuthorizationParseError("Signature is not 64 hex digits")
    return ParsedAuthorization(access_key, date, region, service, terminator,
                               signed, parts["Signature"].lower())


def _headers_by_name(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, list[str]]:
    items = headers.items() if hasattr(headers, "items") else headers
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name.lower(), []).append(value)
    return out


def _canonical_value(values: list[str]) -> str:
    return ",".join(_WS_RUN.sub(" ", v.strip()) for v in values)


def _uri_encode(s: str) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX (uppercase).
    return quote(s, safe="-_.~")


def canonical_uri(path: str) -> str:
    """Canonical URI for non-S3 services: the received (already encoded)
    path, encoded once more, segment by segment.  ``/`` stays ``/``."""
    if not path:
        return "/"
    return quote(path, safe="/~")


def canonical_query_string(query: str) -> str:
    """Sort ``name=value`` pairs by encoded name then value, each name and
    value decoded from the wire and re-encoded the SigV4 way."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()
    k = h(("AWS4" + secret).encode("utf-8"), date)
    k = h(k, region)
    k = h(k, service)
    return h(k, "aws4_request")


def _parse_amz_date(value: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None


def verify(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
    body: bytes,
    secret_for: Callable[[str], str | None] | Mapping[str, str],
    now: _dt.datetime | None = None,
    max_skew: _dt.timedelta = DEFAULT_MAX_SKEW,
) -> SigV4Result:
    """Verify the SigV4 signature of a received request.

    ``headers`` are the request headers exactly as received (a list of
    ``(name, value)`` pairs keeps repeated headers); ``body`` the exact body
    bytes; ``secret_for`` maps an access key to its secret (None if unknown).
    ``now`` defaults to the current UTC time.
    """
    by_name = _headers_by_name(headers)
    auth_values = by_name.get("authorization")
    if not auth_values:
        return SigV4Result(False, "no Authorization header", MISSING_TOKEN)
    if len(auth_values) > 1:
        return SigV4Result(False, "several Authorization headers", INVALID_SIGNATURE)
    try:
        auth = parse_authorization(auth_values[0])
    except AuthorizationParseError as e:
        return SigV4Result(False, f"bad Authorization header: {e}", INVALID_SIGNATURE)

    def fail(reason: str, error_type: str = INVALID_SIGNATURE, **kw) -> SigV4Result:
        return SigV4Result(False, reason, error_type, auth.access_key, auth.signed_headers, **kw)

    if auth.terminator != "aws4_request":
        return fail(f"credential scope must end in aws4_request, not {auth.terminator!r}")
    if list(auth.signed_headers) != [h.lower() for h in auth.signed_headers]:
        return fail("SignedHeaders must be lowercase")
    if "host" not in auth.signed_headers:
        return fail("Host is not among SignedHeaders")

    secret = secret_for.get(auth.access_key) if hasattr(secret_for, "get") else secret_for(auth.access_key)
    if secret is None:
        return fail(f"unknown access key {auth.access_key!r}", UNRECOGNIZED_CLIENT)

    amz_dates = by_name.get("x-amz-date")
    if not amz_dates:
        return fail("no X-Amz-Date header")
    amz_date = amz_dates[-1].strip()
    when = _parse_amz_date(amz_date)
    if when is None:
        return fail(f"malformed X-Amz-Date {amz_date!r}")
    if amz_date[:8] != auth.date:
        return fail(f"X-Amz-Date {amz_date} does not match credential date {auth.date}")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if abs(now - when) > max_skew:
        return fail(f"signature expired or not yet valid: X-Amz-Date {amz_date}, "
                    f"server time {now:%Y%m%dT%H%M%SZ}")

    canonical_headers = "".join(
        f"{name}:{_canonical_value(by_name.get(name, []))}\n" for name in auth.signed_headers
    )
    signed_headers = ";".join(auth.signed_headers)
    canonical_request = "\n".join([
        method.upper(),
        canonical_uri(path),
        canonical_query_string(query),
        canonical_headers,
        signed_headers,
        hashlib.sha256(body).hexdigest(),
    ])
    string_to_sign = "\n".join([
        ALGORITHM,
        amz_date,
        auth.scope,
        hashlib.sha256(canonical_request.encode("utf-8", "surrogateescape")).hexdigest(),
    ])
    key = signing_key(secret, auth.date, auth.region, auth.service)
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, auth.signature):
        return fail("signature mismatch", canonical_request=canonical_request,
                    string_to_sign=string_to_sign)
    return SigV4Result(True, "", None, auth.access_key, auth.signed_headers,
                       canonical_request, string_to_sign)
