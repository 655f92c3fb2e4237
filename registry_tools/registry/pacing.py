"""When to send again: the backoff between retries, and a registry's announced rate limit.

`RetryPolicy` says how often and how long a request is tried again; `RateLimit` reads
`RateLimit-Remaining` from every answer and holds back manifest GETs (what Docker Hub
counts) near the end of the budget: a wait when the reset is near, else `RateLimitLow`
saying when to retry. Both are used by the registry transport.
"""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass

import httpx

from registry_tools.cancel import Cancel
from registry_tools.errors import RateLimitLow

log = logging.getLogger("registry_tools.transport")
KIND = "registry_tools.kind"  # what the request is for: stats and log lines (a request extension)


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_total: float = 120.0  # seconds a single request may spend retrying
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _leading_int(value: str | None) -> int | None:
    """`76;w=21600` -> 76 (Docker Hub's form); None when absent or not a number."""
    head = (value or "").split(";", 1)[0].split(",", 1)[0].strip()
    return int(head) if head.isdigit() else None


class RateLimit:
    """A registry's announced request budget (`RateLimit-Remaining`, Docker Hub's
    `ratelimit-remaining: 76;w=21600`), read from every response.

    Docker Hub counts manifest GETs only, so those are what is held back: when `minimum`
    or fewer remain, a manifest GET waits for the window to reset when the registry says
    that comes within `max_pause` seconds, and otherwise stops with RateLimitLow saying
    when to retry, instead of spending the rest of the budget into HTTP 429s.
    HEADs and blob transfers go on (a check that a mirror is complete needs no GET).
    """

    def __init__(self, minimum: int = 3, max_pause: float = 60.0):
        self.minimum = minimum
        self.max_pause = max_pause
        self.remaining: int | None = None
        self.limit: int | None = None
        self.window: int | None = None
        self.reset_at: float | None = None
        self._lock = threading.Lock()

    def note(self, resp: httpx.Response) -> None:
        h = resp.headers
        remaining = _leading_int(h.get("ratelimit-remaining"))
        if remaining is None:
            return
        self.remaining = remaining
        self.limit = _leading_int(h.get("ratelimit-limit"))
        policy = h.get("ratelimit-remaining", "") + ";" + h.get("ratelimit-limit", "")
        window = next((p.strip()[2:] for p in policy.split(";") if p.strip().startswith("w=")), "")
        self.window = int(window) if window.isdigit() else None
        reset = _leading_int(h.get("ratelimit-reset"))
        self.reset_at = time.time() + reset if reset is not None else None

    def before(self, request: httpx.Request, cancel: Cancel) -> None:
        if self.minimum <= 0 or request.method != "GET" or request.extensions.get(KIND) != "manifest":
            return
        with self._lock:
            if self.remaining is None or self.remaining > self.minimum:
                if self.remaining is not None:
                    self.remaining -= 1  # counted now: GETs sent at once (an index's manifests) see each other
                return
        host = request.url.netloc.decode("ascii", "replace")
        wait = self.reset_at - time.time() if self.reset_at is not None else None
        if wait is not None and wait <= self.max_pause:
            log.warning("%s: %d request(s) left in its rate limit; waiting %.0f s for it to reset",
                        host, self.remaining, max(wait, 0))
            cancel.sleep(max(wait, 0) + 1)
            self.remaining = None
            return
        if self.reset_at is not None:
            when = time.strftime("%H:%M UTC", time.gmtime(self.reset_at))
        elif self.window:
            when = f"the registry's window ({self.window // 3600} h {self.window % 3600 // 60} min) has passed"
        else:
            when = "the registry's rate-limit window has passed"
        limit = f" of {self.limit}" if self.limit is not None else ""
        raise RateLimitLow(f"{host}: only {self.remaining}{limit} manifest request(s) left in its rate limit "
                           f"(--rate-limit-min {self.minimum}); stopped before it answers 429. "
                           f"Retry after {when}, or log in for a larger limit")


