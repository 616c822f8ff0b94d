"""A device's proxy: the URL its engine dials WhatsApp through.

The URL may carry a user name and password (`socks5://user:secret@host:1080`): those are
secrets. Events keep the whole URL (encrypted at rest with the store's cipher key); what
anyone reads (history, exports, logs) is `public_proxy`: scheme, host and port only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# The schemes every engine can dial through: whatsmeow (Go's x/net/proxy and HTTP
# CONNECT) and the Baileys sidecar (socks-proxy-agent, https-proxy-agent).
PROXY_SCHEMES = ("http", "https", "socks5")
MAX_PROXY_LENGTH = 2048
# The same rule as a (JSON Schema) pattern, for the published schemas: every string it
# matches passes `check_proxy` (a test holds the two together). Narrower than the check:
# host names and IPv4 addresses only, credentials of URL-safe characters.
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_USERINFO = "([A-Za-z0-9._~%!$&'()*+,;=-]+(:[A-Za-z0-9._~%!$&'()*+,;=:-]*)?@)?"
PROXY_PATTERN = (
    "^([Hh][Tt][Tt][Pp][Ss]?|[Ss][Oo][Cc][Kk][Ss]5)://"
    + _USERINFO
    + "[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?:"
    + _PORT
    + "/?$"
)


class InvalidProxyError(ValueError):
    """Not a proxy URL pairgate can use; the message says why (without the URL's secrets)."""


def check_proxy(url: str) -> str:
    """`url` if it is a usable proxy URL: scheme, host and port, optional credentials,
    nothing else. InvalidProxyError otherwise."""
    if len(url) > MAX_PROXY_LENGTH:
        raise InvalidProxyError(f"a proxy URL is at most {MAX_PROXY_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidProxyError("a proxy URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidProxyError("the proxy's port must be a number from 1 to 65535") from None
    if parts.scheme.lower() not in PROXY_SCHEMES:
        raise InvalidProxyError(f"a proxy URL's scheme is one of {', '.join(PROXY_SCHEMES)}")
    if not parts.hostname:
        raise InvalidProxyError("a proxy URL names a host: scheme://[user:password@]host:port")
    if not port:
        raise InvalidProxyError("a proxy URL gives its port: scheme://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxyError("a proxy URL has no path, query or fragment")
    if parts.password is not None and parts.username in (None, ""):
        raise InvalidProxyError("a proxy password comes with a user name")
    return url


def public_proxy(url: str) -> str:
    """What may be shown of a proxy: `scheme://host:port`, never its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}:{parts.port}"
