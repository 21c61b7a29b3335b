"""Passwords out of sight: every secret in a text, a URL or a key=value string shown as ``****``.

``redact`` scrubs known secrets (raw, percent- or conninfo-encoded) from any text,
such as a driver error; ``redact_url`` masks whatever may be a password in a URL
or connection string that could not be parsed, so a malformed one can still be
shown in the error that says what is wrong with it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "SECRET_PARAMS", "redact", "redact_url"]

MASK = "****"
#: libpq parameters whose values are secrets.
SECRET_PARAMS = ("password", "sslpassword")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret, raw or percent- or conninfo-encoded, replaced by ``****``."""
    forms = set()
    for secret in filter(None, secrets):
        escaped = secret.replace("\\", "\\\\").replace("'", "\\'")
        forms.update((secret, quote(secret, safe=""), quote(secret), quote_plus(secret), escaped))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


_URL_SECRET_PARAM = re.compile(r"([?&](?:ssl)?password=)[^&]*")
# A "user:secret" with no "@": the part after ":" is a port only if it is all digits.
_BARE_CREDENTIALS = re.compile(r"^([^/?:]*):(?!\d*(?:[/?]|$))[^/?]*")


def redact_url(text: str) -> str:
    """A possibly malformed URL for display: everything that may be a password masked.

    The password is taken to run to the *last* "@", the safe reading when the URL
    has several; password parameters and a non-numeric "port" (``user:secret``
    without a host) are masked too. Text without ``://`` is read as key=value.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _redact_key_value(text)
    rest = _URL_SECRET_PARAM.sub(rf"\1{MASK}", rest)
    if "@" in rest:
        credentials, _, after = rest.rpartition("@")
        user, colon, _ = credentials.partition(":")
        return f"{scheme}://{user}{colon and ':' + MASK}@{after}"
    return f"{scheme}://" + _BARE_CREDENTIALS.sub(rf"\1:{MASK}", rest)


# A password value: quoted (to the closing quote, or the end if there is none), or
# unquoted up to the next "key=" (an unescaped space there is more likely a typo
# inside the password than the end of it).
_KV_SECRET = re.compile(
    r"((?:^|\s)(?:ssl)?password\s*=\s*)"
    r"('(?:[^'\\]|\\.)*(?:'|$)|(?:\\.|[^\s\\]|\s+(?!\s|\w+\s*=))*\\?)")


def _redact_key_value(text: str) -> str:
    """Text that is no URL (a libpq key=value string, or a URL without its scheme), secrets masked.

    A password value is quoted with ``'`` (``\\'`` inside) or runs to the next
    ``key=``, escaped spaces (``\\ ``) included. A ``user:secret@`` part is
    masked as in a URL.
    """
    text = _KV_SECRET.sub(rf"\1{MASK}", text)
    if "@" in text:
        credentials, _, after = text.rpartition("@")
        head, colon, _ = credentials.partition(":")
        if colon:
            return f"{head}:{MASK}@{after}"
    return text
