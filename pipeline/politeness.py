"""Politeness rules for the fetcher: robots.txt, opt-out directives, per-host pacing and Retry-After.

The pieces here are plain and synchronous where they can be (parsing), so they are tested directly;
`pipeline/fetch.py` wires them into the request path. Everything is on by default and is switched off only
by an explicit FetchOptions field.
"""

import asyncio
import email.utils
import time
from dataclasses import dataclass
from typing import Iterable

from protego import Protego
from selectolax.lexbor import LexborHTMLParser

# The directives by which a site says "do not put my content in a dataset / index". noai and noimageai
# are the dataset opt-outs (DeviantArt, Raptive...); noindex and noimageindex are the classic search ones,
# which img2dataset also honours.
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})

# X-Robots-Tag directives that carry a value after a colon, so "unavailable_after: ..." is not read as
# a rule scoped to a crawler named "unavailable_after".
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})

# Sites that opted out of img2dataset by name meant "image-dataset crawlers"; we are one, so we listen too.
DATASET_CRAWLER_TOKENS = ("img2dataset",)


def user_agent_token(user_agent: str) -> str:
    """The product token robots.txt groups and scoped opt-outs name: "OpenWIT/0.1 (+url)" -> "openwit"."""
    return user_agent.split("/", 1)[0].split()[0].strip().lower() if user_agent.strip() else ""


def x_robots_tag_opts_out(values: Iterable[str], agent_tokens: Iterable[str]) -> bool:
    """True when an X-Robots-Tag header value forbids us.

    Unscoped directives ("noai, noindex") apply to every crawler. A "name:" prefix scopes the directives that
    follow it to that crawler, until the next prefix: "otherbot: noindex" does not concern us,
    "openwit: noai" does.
    """
    tokens = {t.lower() for t in agent_tokens}
    for value in values:
        scope = None
        for part in value.split(","):
            part = part.strip()
            name, colon, rest = part.partition(":")
            if colon and name.strip().lower() not in _VALUED_DIRECTIVES:
                scope = name.strip().lower()
                part = rest.strip()
            if part.lower() in OPT_OUT_DIRECTIVES and (scope is None or scope in tokens):
                return True
    return False


def meta_robots_opts_out(html: bytes | str, agent_tokens: Iterable[str]) -> bool:
    """True when a `<meta name="robots">` (or `<meta name="openwit">`) tag in the page forbids us."""
    names = {"robots", *(t.lower() for t in agent_tokens)}
    tree = LexborHTMLParser(html)
    for meta in tree.css("meta[name]"):
        if (meta.attributes.get("name") or "").strip().lower() in names:
            content = meta.attributes.get("content") or ""
            if any(d.strip().lower() in OPT_OUT_DIRECTIVES for d in content.split(",")):
                return True
    return False


@dataclass
class RobotsRules:
    """What one origin's robots.txt says about us. `failure` is set when the file could not be read in a
    way that RFC 9309 says means "assume complete disallow" (server error) or the host is unreachable."""

    parser: Protego | None = None       # None: no robots.txt (4xx), everything allowed
    failure: str | None = None          # a fetch reason key when robots.txt could not be read
    failure_message: str | None = None

    def allows(self, url: str, agent_token: str) -> bool:
        return self.parser is None or self.parser.can_fetch(url, agent_token)

    def crawl_delay(self, agent_token: str) -> float:
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(agent_token)
        return float(delay) if delay else 0.0


class RobotsCache:
    """robots.txt rules per origin for the life of a worker: shards come and go (each with its own Fetcher
    and event loop), a host's robots.txt is fetched once. Only rules actually read (or a 4xx "no robots.txt")
    are kept: a host that was down is asked again by the next shard. Bounded: the oldest origins go first."""

    def __init__(self, max_origins: int = 100_000):
        self.max_origins = max_origins
        self._rules: dict[str, RobotsRules] = {}

    def get(self, origin: str) -> "RobotsRules | None":
        return self._rules.get(origin)

    def put(self, origin: str, rules: RobotsRules) -> None:
        if rules.failure is not None:
            return
        self._rules[origin] = rules
        while len(self._rules) > self.max_origins:
            del self._rules[next(iter(self._rules))]  # dicts keep insertion order: the oldest entry


def parse_robots(body: bytes) -> RobotsRules:
    try:
        return RobotsRules(parser=Protego.parse(body.decode("utf-8", "replace")))
    except Exception:  # a file the parser chokes on holds no rule we can read: as if there were none
        return RobotsRules()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class HostGate:
    """One host's share of the fetcher: at most `concurrency` requests in flight, starts spaced by
    `min_delay` seconds, and no start before `paused_until` after the host asked us to back off (429/503).
    `shards`: into how many shards the host was split; this gate holds this shard's share of the host."""

    def __init__(self, concurrency: int, min_delay: float, shards: int = 1):
        self.slots = asyncio.Semaphore(concurrency)
        # One more, for a retry the host itself scheduled (Retry-After): it must not wait behind requests that
        # hold the regular slots, maybe stalled for the whole timeout.
        self.urgent_slots = asyncio.Semaphore(1)
        self.min_delay = min_delay
        self.shards = shards
        self.next_start = 0.0     # event-loop time of the next free start, for the spacing
        self.paused_until = 0.0   # event-loop time before which nothing starts, after a 429/503

    def back_off(self, seconds: float) -> None:
        """Every request to this host waits `seconds` from now, not only the one that got the 429."""
        now = asyncio.get_running_loop().time()
        self.paused_until = max(self.paused_until, now + seconds)

    async def wait_turn(self) -> None:
        """Call while holding a slot: waits out a pause, then takes the next start time of the spacing."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < self.paused_until:
                await asyncio.sleep(self.paused_until - now)
                continue
            start = max(now, self.next_start)
            self.next_start = start + self.min_delay  # no await between read and write: no race in asyncio
            if start <= now:
                return
            await asyncio.sleep(start - now)
            if loop.time() >= self.paused_until:  # a back-off that came while we slept still applies
                return
