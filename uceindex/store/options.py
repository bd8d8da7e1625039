"""Storage options of a store on object storage (s3://, gs://, az://): where they come from,
what their short names mean, and how errors are told without leaking a credential.

Precedence, highest first: the options passed in (`--storage-option key=value`), then
$UCEINDEX_STORAGE_OPTIONS (`key=value,key=value` or a JSON object), then what Lance reads by
itself (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP).
Local stores take no options.
"""

from __future__ import annotations

import json
import os
import re

from uceindex.errors import StoreError

OPTIONS_ENV = "UCEINDEX_STORAGE_OPTIONS"
ALIASES = {  # short names users type -> Lance's names
    "region": "aws_region",
    "endpoint": "aws_endpoint",
    "endpoint_url": "aws_endpoint",
    "aws_endpoint_url": "aws_endpoint",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
    "aws_allow_http": "allow_http",
}
ENDPOINT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT")
# Every request of a store, unless the user set its own (a stalled endpoint then fails in
# minutes, not Lance's 12).
WORK_DEFAULTS = {
    "connect_timeout": "5s",
    "timeout": "60s",
    "client_max_retries": "3",
    "client_retry_timeout": "60",
}
# The first contact when a store opens: a dead endpoint fails in seconds.
PROBE_DEFAULTS = {
    "connect_timeout": "2s",
    "timeout": "3s",
    "client_max_retries": "0",
    "client_retry_timeout": "3",
}
SECRET_WORDS = ("secret", "token", "password", "key", "sas", "credential")
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:aws_)?(?:secret_access_key|secret|session_token|access_key_id)|sas_token|"
    r"account_key|password|token)([\"']?\s*[:=]\s*[\"']?)([^\s,\"'}&]+)"
)
HIDDEN = "***"


def is_remote(uri: str) -> bool:
    """An object-store URI (s3://, gs://, az://, ...), not a directory or file://."""
    return "://" in uri and not uri.startswith("file://")


def parse_pairs(pairs: list[str] | str | None, what: str = "--storage-option") -> dict[str, str]:
    """`key=value` items (a list, or one string of them joined by commas) as a dict; a JSON
    object string is taken as it is. A malformed item raises StoreError naming `what`."""
    if not pairs:
        return {}
    if isinstance(pairs, str):
        text = pairs.strip()
        if text.startswith("{"):
            try:
                given = json.loads(text)
            except json.JSONDecodeError as exc:
                raise StoreError(f"{what} is not valid JSON ({exc.msg})") from None
            if not isinstance(given, dict):
                raise StoreError(f"{what} must be a JSON object of key: value")
            return {str(k): str(v) for k, v in given.items()}
        pairs = [p for p in text.split(",") if p.strip()]
    options = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            shown = item.split("=")[0] if "=" in item else item
            raise StoreError(f"{what} {shown.strip()!r} is not key=value (e.g. region=eu-west-1)")
        options[key.strip()] = value.strip()
    return options


def _canonical(options: dict) -> dict[str, str]:
    out = {}
    for key, value in options.items():
        key = str(key).strip().lower()
        out[ALIASES.get(key, key)] = str(value)
    return out


def resolve(uri: str, given: dict | None = None, *, probe: bool = False) -> dict[str, str]:
    """The options a store at `uri` is opened with: `given` over $UCEINDEX_STORAGE_OPTIONS,
    short names mapped, allow_http set for an http:// endpoint, and timeouts (`probe`: the
    short ones of the first contact) unless set. Empty for a local store."""
    if not is_remote(uri):
        return {}
    options = _canonical(parse_pairs(os.environ.get(OPTIONS_ENV), OPTIONS_ENV))
    options.update(_canonical(given or {}))
    endpoint = options.get("aws_endpoint") or next(
        (os.environ[v] for v in ENDPOINT_ENV if os.environ.get(v)), ""
    )
    if endpoint.startswith("http://") and "allow_http" not in options:
        if not os.environ.get("AWS_ALLOW_HTTP"):
            options["allow_http"] = "true"
    for key, value in (PROBE_DEFAULTS if probe else WORK_DEFAULTS).items():
        options.setdefault(key, value)
    return options


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


def redact(text: str, options: dict | None = None) -> str:
    """`text` with the values of secret options, and any `secret_access_key=...`, hidden."""
    values = [str(v) for k, v in (options or {}).items() if _is_secret(k) and len(str(v)) >= 3]
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        if len(os.environ.get(name, "")) >= 3:
            values.append(os.environ[name])
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return _SECRET_PAIR.sub(lambda m: m.group(1) + m.group(2) + HIDDEN, text)


def shown(options: dict) -> dict[str, str]:
    """The options with secret values hidden (for --json output and logs)."""
    return {k: HIDDEN if _is_secret(k) else v for k, v in options.items()}


def open_error(uri: str, exc: BaseException, options: dict) -> StoreError:
    """One line a user can act on for a store that could not be opened."""
    text = redact(" ".join(str(exc).split()), options)
    endpoint = options.get("aws_endpoint") or next(
        (os.environ[v] for v in ENDPOINT_ENV if os.environ.get(v)), "the default endpoint"
    )
    if "NoSuchBucket" in text:
        why = "its bucket does not exist (NoSuchBucket): create the bucket first"
    elif re.search(r"SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|403 Forbidden", text):
        why = (
            "the object store refused the credentials (403): check aws_access_key_id and "
            "aws_secret_access_key (--storage-option, $UCEINDEX_STORAGE_OPTIONS or AWS_*)"
        )
    elif re.search(r"builder error|kind: Builder|BadScheme", text):
        why = (
            f"the endpoint {endpoint} is plain http: set --storage-option allow_http=true "
            "(or AWS_ALLOW_HTTP=true)"
        )
    elif re.search(r"error sending request|timed out|connection|dns error", text, re.I):
        why = f"cannot reach {endpoint}: check the endpoint (--storage-option endpoint=URL)"
    else:
        why = f"{type(exc).__name__}: {text[:300]}"
    return StoreError(f"cannot open the store at {uri}: {why}")
