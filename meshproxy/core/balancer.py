"""Sans-IO load balancing: pick one upstream ``Endpoint`` of a cluster per request.

This is what Envoy's cluster load balancers do under Istio's configuration
(DestinationRule ``trafficPolicy.loadBalancer``), without any I/O:

``LEAST_REQUEST`` (Istio's default)
    Equal weights: *power of two choices* exactly as Envoy's ``N_CHOICES``
    selection with the default ``choice_count`` 2: draw two hosts uniformly at
    random, independently (both draws may land on the same host), keep the
    first unless the second has strictly fewer ``active_requests``.
    Unequal weights: Envoy's EDF schedule with the dynamic weight
    ``weight / (active_requests + 1)`` (``active_request_bias`` 1.0), the
    weight being re-evaluated each time the host is picked and re-queued.
``ROUND_ROBIN``
    Equal weights: plain rotation starting at a random offset.  Unequal
    weights: Envoy's EDF (earliest deadline first) schedule, where host *i*'s
    *k*-th turn has deadline ``k / weight_i`` -- a smooth interleaving in
    which each host gets exactly its share of every period.  The period is
    precomputed, so a pick is one C call either way.
``RANDOM``
    Uniform over healthy hosts.  Like Envoy's random LB, weights are ignored.
``PASSTHROUGH``
    Istio's ORIGINAL_DST: no selection at all.  ``choose`` returns ``None`` and
    the balancer's ``passthrough`` is ``True``: the caller connects to the
    request's original destination.
``RING_HASH``
    Envoy's ketama ring: each host contributes entries hashed as
    ``xxHash64(f"{host.key}_{i}")``; the number of entries is proportional to
    the host's weight, the least-weighted host getting a whole number and the
    ring holding at least ``ring_minimum_size`` entries (at most 8M, Envoy's
    default maximum).  A key maps to the first entry whose hash is ``>=`` it,
    wrapping around.  Built from the same hashes as Envoy, so a key lands on
    the same host as in Envoy given the same endpoints.
``MAGLEV``
    Envoy's Maglev table (paper listing 1, weighted as Envoy does), of
    ``maglev_table_size`` entries (prime; 65537 by default).  Host ``h``'s
    permutation has offset ``xxHash64(key) % M`` and skip
    ``xxHash64(key, seed=1) % (M - 1) + 1``; hosts are filled in key order.
    Lookup is ``table[hash % M]``.

For the hash balancers a missing key (``hash_key=None``) picks a random
entry, as Envoy does.  Hashes are xxHash64 with seed 0 -- Envoy's
``HashUtil::xxHash64`` -- so every process, and Envoy itself, maps the same key
the same way.

Health
    Only endpoints whose ``healthy`` is true take part.  The eligible set (and
    with it the schedule, ring or table) is computed at construction and again
    by ``refresh()``.  Whoever changes ``Endpoint.healthy`` should call
    ``refresh()`` on the balancers holding that endpoint (Envoy rebuilds its
    LBs on every health change too).  As a safety net ``choose`` notices a
    picked endpoint that became unhealthy and refreshes by itself; an
    endpoint that *became* healthy is only seen after ``refresh()``.  With no
    healthy endpoint ``choose`` returns ``None``.

Panic
    ``panic_threshold`` (percent; Istio's ``outlierDetection.minHealthPercent``,
    0 = never) is Envoy's ``healthy_panic_threshold``: when fewer than that
    percentage of the endpoints are healthy, the balancer ignores health and
    picks among all of them (``in_panic`` is then true).

Retries ("previous hosts")
    ``choose(exclude=tried)`` re-picks up to ``HOST_SELECTION_RETRY_MAX_ATTEMPTS``
    (5, Istio's ``host_selection_retry_max_attempts``) more times while the pick
    is in ``exclude`` and returns the last pick if every one was excluded --
    Envoy's loop of ``1 + host_selection_retry_max_attempts`` selections.  The
    hash balancers ignore ``exclude``: Istio installs no previous-hosts
    predicate under consistent hashing.

Randomness comes only from the injected ``random.Random``, so tests are exact.

Speed: ``choose`` is on the per-request path.  Each balancer's ``choose`` is an
instance attribute holding a closure built by ``refresh()`` for the current
healthy set, so a call reads closure cells rather than attributes: a round
robin pick is ``itertools.cycle.__next__`` plus two checks.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import random
from array import array
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import xxhash

from meshproxy.core.endpoints import (
    LEAST_REQUEST,
    MAGLEV,
    PASSTHROUGH,
    RANDOM,
    RING_HASH,
    ROUND_ROBIN,
    Endpoint,
    HashPolicy,
    LbSettings,
)

__all__ = [
    "Balancer",
    "HOST_SELECTION_RETRY_MAX_ATTEMPTS",
    "DEFAULT_MAX_RING_SIZE",
    "make_balancer",
    "compute_hash",
    "hash_bytes",
    "generate_cookie_value",
    "make_set_cookie",
]

#: Extra selections after the first when the pick was tried before (Istio: 5).
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
#: Envoy's ``maximum_ring_size`` default (Istio sets only the minimum).
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024
#: A weighted round-robin period longer than this is run as a live EDF heap
#: instead of being precomputed.
_MAX_PRECOMPUTED_PERIOD = 1 << 16

_xxh64 = xxhash.xxh64_intdigest


def hash_bytes(data: bytes, seed: int = 0) -> int:
    """xxHash64 of ``data`` (Envoy's ``HashUtil::xxHash64``; seed 0 by default)."""
    return _xxh64(data, seed)


class Balancer(Protocol):
    """What the router and transport use.  Built by ``make_balancer``."""

    #: All endpoints given at construction, healthy or not, in their order.
    endpoints: tuple[Endpoint, ...]
    #: True only for PASSTHROUGH: connect to the original destination.
    passthrough: bool
    #: The consistent-hash policy for RING_HASH/MAGLEV, else None.
    hash_policy: HashPolicy | None

    def choose(
        self, hash_key: int | None = None, exclude: Collection[Endpoint] | None = None
    ) -> Endpoint | None:
        """A healthy endpoint, or None when there is none (always None for PASSTHROUGH)."""
        ...

    def refresh(self) -> None:
        """Recompute the eligible (healthy) set after ``Endpoint.healthy`` changed."""
        ...


def _choose_none(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> None:
    return None


class _BalancerBase:
    """Shared state and the slow path; subclasses implement ``_build``."""

    __slots__ = ("endpoints", "passthrough", "hash_policy", "choose", "_pick", "_rng", "panic_threshold", "in_panic")

    def __init__(self, settings: LbSettings, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.passthrough = False
        self.hash_policy: HashPolicy | None = None
        self._rng = rng
        self.choose: Callable[..., Endpoint | None] = _choose_none
        self._pick: Callable[[], Endpoint] = _no_pick
        self.panic_threshold = 0.0
        self.in_panic = False

    def refresh(self) -> None:
        healthy = tuple(ep for ep in self.endpoints if ep.healthy)
        total = len(self.endpoints)
        # Envoy's isHostSetInPanic: healthy% < healthy_panic_threshold -> use every host.
        self.in_panic = bool(total) and 100.0 * len(healthy) / total < self.panic_threshold
        if self.in_panic:
            healthy = self.endpoints
        if healthy:
            self.choose, self._pick = self._build(healthy)
        else:
            self.choose, self._pick = _choose_none, _no_pick

    def _build(self, hosts: tuple[Endpoint, ...]) -> tuple[Callable[..., Endpoint | None], Callable[[], Endpoint]]:
        raise NotImplementedError

    def _slow(self, h: Endpoint, exclude: Collection[Endpoint] | None) -> Endpoint | None:
        """The first pick ``h`` was unhealthy or there is an ``exclude`` set."""
        panic = self.in_panic
        if not h.healthy and not panic:
            self.refresh()
            return self.choose(None, exclude)
        if not exclude:
            return h
        pick = self._pick
        for _ in range(HOST_SELECTION_RETRY_MAX_ATTEMPTS):
            if h not in exclude:
                return h
            h = pick()
            if not h.healthy and not panic:
                self.refresh()
                return self.choose(None, exclude)
        return h

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.endpoints)} endpoints)"


def _no_pick() -> Endpoint:  # pragma: no cover - never called: choose is _choose_none then
    raise LookupError("no healthy endpoint")


def _single(balancer: _BalancerBase, h: Endpoint):
    """choose() for a one-host set: every kind picks it (exclude cannot avoid it)."""
    slow = balancer._slow

    def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
        if h.healthy:
            return h
        return slow(h, None)

    def pick() -> Endpoint:
        return h

    return choose, pick


def _weights_equal(hosts: Sequence[Endpoint]) -> bool:
    w = hosts[0].weight
    return all(ep.weight == w for ep in hosts)


def _weight(ep: Endpoint) -> int:
    # Envoy's load_balancing_weight is >= 1 (validated); never divide by zero here.
    w = int(ep.weight)
    return w if w >= 1 else 1


# --------------------------------------------------------------------------- round robin


def _edf_period(weights: Sequence[int]) -> list[int]:
    """One period of Envoy's EDF schedule for static integer weights, as host indices.

    Host ``i``'s ``k``-th deadline is ``k / w_i``; the earliest deadline is
    served first, ties going to the entry queued first (Envoy's
    ``order_offset``).  Deadlines are compared exactly as integers scaled by
    ``lcm(weights)``.  The period is ``sum(w_i / g)`` picks with ``g`` the gcd.
    """
    g = math.gcd(*weights)
    ws = [w // g for w in weights]
    lcm = math.lcm(*ws)
    steps = [lcm // w for w in ws]
    heap = [(steps[i], i, i) for i in range(len(ws))]
    heapq.heapify(heap)
    order = len(ws)
    out = []
    for _ in range(sum(ws)):
        deadline, _, i = heap[0]
        out.append(i)
        heapq.heapreplace(heap, (deadline + steps[i], order, i))
        order += 1
    return out


class _RoundRobin(_BalancerBase):
    __slots__ = ()

    def _build(self, hosts):
        n = len(hosts)
        if n == 1:
            return _single(self, hosts[0])
        if _weights_equal(hosts):
            schedule: Sequence[Endpoint] = hosts
        else:
            weights = [_weight(h) for h in hosts]
            g = math.gcd(*weights)
            if sum(weights) // g > _MAX_PRECOMPUTED_PERIOD:
                return _edf_live(self, hosts, weights, bias=0.0)
            schedule = [hosts[i] for i in _edf_period(weights)]
        # Envoy starts the rotation (or the EDF schedule) at a random point so
        # that proxies do not all hit the same host first.
        start = self._rng.randrange(len(schedule))
        nxt = itertools.cycle(tuple(schedule[start:]) + tuple(schedule[:start])).__next__
        slow = self._slow

        def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
            h = nxt()
            if h.healthy and not exclude:
                return h
            return slow(h, exclude)

        return choose, nxt


def _edf_live(balancer: _BalancerBase, hosts: tuple[Endpoint, ...], weights: list[int], bias: float):
    """Envoy's EdfScheduler with ``pickAndAdd``: pop the earliest deadline, re-queue it.

    ``bias`` 1.0 is weighted LEAST_REQUEST (weight ``w / (active + 1)``); 0.0 is
    plain weighted round robin (used when the period is too long to precompute).
    """
    heap = [(1.0 / w, i, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    order = itertools.count(len(hosts)).__next__
    replace = heapq.heapreplace
    inv = [1.0 / w for w in weights]
    # A random number of initial picks, as Envoy's createWithPicks does, so
    # that proxies start at different points of the schedule.
    for _ in range(balancer._rng.randrange(min(sum(weights), 4096))):
        d, _o, i = heap[0]
        replace(heap, (d + inv[i], order(), i))

    if bias:

        def pick() -> Endpoint:
            d, _o, i = heap[0]
            h = hosts[i]
            replace(heap, (d + (h.active_requests + 1) * inv[i], order(), i))
            return h

    else:

        def pick() -> Endpoint:
            d, _o, i = heap[0]
            replace(heap, (d + inv[i], order(), i))
            return hosts[i]

    slow = balancer._slow

    def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
        h = pick()
        if h.healthy and not exclude:
            return h
        return slow(h, exclude)

    return choose, pick


# --------------------------------------------------------------------------- least request, random


class _LeastRequest(_BalancerBase):
    __slots__ = ()

    def _build(self, hosts):
        n = len(hosts)
        if n == 1:
            return _single(self, hosts[0])
        if not _weights_equal(hosts):
            return _edf_live(self, hosts, [_weight(h) for h in hosts], bias=1.0)
        rand = self._rng.getrandbits
        slow = self._slow

        def pick() -> Endpoint:
            a = hosts[rand(32) % n]
            b = hosts[rand(32) % n]
            return b if b.active_requests < a.active_requests else a

        def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
            a = hosts[rand(32) % n]
            b = hosts[rand(32) % n]
            if b.active_requests < a.active_requests:
                a = b
            if a.healthy and not exclude:
                return a
            return slow(a, exclude)

        return choose, pick


class _Random(_BalancerBase):
    __slots__ = ()

    def _build(self, hosts):
        n = len(hosts)
        if n == 1:
            return _single(self, hosts[0])
        rand = self._rng.getrandbits
        slow = self._slow

        def pick() -> Endpoint:
            return hosts[rand(32) % n]

        def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
            h = hosts[rand(32) % n]
            if h.healthy and not exclude:
                return h
            return slow(h, exclude)

        return choose, pick


class _Passthrough(_BalancerBase):
    __slots__ = ()

    def __init__(self, settings: LbSettings, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        super().__init__(settings, endpoints, rng)
        self.passthrough = True

    def refresh(self) -> None:
        self.choose = _choose_none


# --------------------------------------------------------------------------- consistent hashing


def _normalized(weights: Sequence[int]) -> list[float]:
    total = sum(weights)
    return [w * 1.0 / total for w in weights]


@functools.lru_cache(maxsize=64)
def _ring(keys_weights: tuple[tuple[str, int], ...], min_size: int, max_size: int) -> tuple[list[int], array]:
    """Envoy's RingHashLoadBalancer::Ring: (sorted entry hashes, host index per entry)."""
    norm = _normalized([w for _, w in keys_weights])
    min_w = min(norm)
    scale = min(math.ceil(min_w * min_size) / min_w, float(max_size))
    entries: list[tuple[int, int]] = []
    current = 0.0
    target = 0.0
    for idx, ((key, _), w) in enumerate(zip(keys_weights, norm)):
        prefix = f"{key}_"
        target += scale * w
        i = 0
        while current < target:
            entries.append((_xxh64(f"{prefix}{i}".encode()), idx))
            i += 1
            current += 1
    entries.sort(key=lambda e: e[0])
    return [h for h, _ in entries], array("I", [i for _, i in entries])


@functools.lru_cache(maxsize=16)
def _maglev(keys_weights: tuple[tuple[str, int], ...], size: int) -> array:
    """Envoy's OriginalMaglevTable: the host index of each of the ``size`` slots."""
    norm = _normalized([w for _, w in keys_weights])
    max_w = max(norm)
    order = sorted(range(len(keys_weights)), key=lambda i: keys_weights[i][0])
    offsets = []
    skips = []
    for i in order:
        key = keys_weights[i][0].encode()
        offsets.append(_xxh64(key) % size)
        skips.append(_xxh64(key, 1) % (size - 1) + 1)
    weights = [norm[i] for i in order]
    m = len(order)
    target = [0.0] * m
    nexts = [0] * m
    table = [-1] * size
    filled = 0
    iteration = 1
    while filled < size:
        for j in range(m):
            if iteration * weights[j] < target[j]:
                continue
            target[j] += max_w
            off = offsets[j]
            skip = skips[j]
            nx = nexts[j]
            c = (off + skip * nx) % size
            while table[c] >= 0:
                nx += 1
                c = (off + skip * nx) % size
            table[c] = order[j]
            nexts[j] = nx + 1
            filled += 1
            if filled == size:
                break
        iteration += 1
    return array("I", table)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    r = math.isqrt(n)
    f = 3
    while f <= r:
        if n % f == 0:
            return False
        f += 2
    return True


class _RingHash(_BalancerBase):
    __slots__ = ("_min_size", "_max_size")

    def __init__(self, settings: LbSettings, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        super().__init__(settings, endpoints, rng)
        self.hash_policy = settings.hash_policy
        self._min_size = settings.ring_minimum_size
        self._max_size = DEFAULT_MAX_RING_SIZE
        if self._min_size < 1 or self._min_size > self._max_size:
            raise ValueError(f"ring hash: minimum_ring_size {self._min_size} not in [1, {self._max_size}]")

    def _build(self, hosts):
        if len(hosts) == 1:
            return _single(self, hosts[0])
        hashes, idx = _ring(tuple((h.key, _weight(h)) for h in hosts), self._min_size, self._max_size)
        # One extra slot: a key above every entry wraps to the first entry.
        at = [hosts[i] for i in idx]
        at.append(at[0])
        lookup = bisect.bisect_left
        rand = self._rng.getrandbits
        balancer = self

        def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
            if hash_key is None:
                hash_key = rand(64)
            h = at[lookup(hashes, hash_key)]
            if h.healthy or balancer.in_panic:
                return h
            balancer.refresh()
            return balancer.choose(hash_key)

        return choose, _no_pick


class _Maglev(_BalancerBase):
    __slots__ = ("_size",)

    def __init__(self, settings: LbSettings, endpoints: Sequence[Endpoint], rng: random.Random) -> None:
        super().__init__(settings, endpoints, rng)
        self.hash_policy = settings.hash_policy
        self._size = settings.maglev_table_size
        if not _is_prime(self._size):
            raise ValueError(f"maglev: table size {self._size} must be a prime number")

    def _build(self, hosts):
        if len(hosts) == 1:
            return _single(self, hosts[0])
        idx = _maglev(tuple((h.key, _weight(h)) for h in hosts), self._size)
        table = [hosts[i] for i in idx]
        size = self._size
        rand = self._rng.getrandbits
        balancer = self

        def choose(hash_key: int | None = None, exclude: Collection[Endpoint] | None = None) -> Endpoint | None:
            if hash_key is None:
                hash_key = rand(64)
            h = table[hash_key % size]
            if h.healthy or balancer.in_panic:
                return h
            balancer.refresh()
            return balancer.choose(hash_key)

        return choose, _no_pick


_KINDS: dict[str, type[_BalancerBase]] = {
    LEAST_REQUEST: _LeastRequest,
    ROUND_ROBIN: _RoundRobin,
    RANDOM: _Random,
    PASSTHROUGH: _Passthrough,
    RING_HASH: _RingHash,
    MAGLEV: _Maglev,
}


def make_balancer(settings: LbSettings, endpoints: Sequence[Endpoint], rng: random.Random, *, panic_threshold: float = 0.0) -> Balancer:
    """Build the balancer for ``settings.kind`` over ``endpoints``.

    Everything a pick needs (schedule, ring, table) is computed here, once per
    config compile, and again only by ``refresh()``.  Raises ``ValueError`` for
    an unknown kind, a non-prime Maglev table size or a ring minimum size out
    of range.
    """
    try:
        cls = _KINDS[settings.kind]
    except KeyError:
        raise ValueError(f"unknown load balancer kind {settings.kind!r}") from None
    balancer = cls(settings, endpoints, rng)
    balancer.panic_threshold = panic_threshold
    balancer.refresh()
    return balancer  # type: ignore[return-value]


# --------------------------------------------------------------------------- hash policy


def _parse_cookie(raw: bytes, name: bytes) -> bytes:
    """Envoy's ``Utility::parseCookieValue``: first ``name=value`` pair, quotes stripped.

    Empty result means absent (Envoy does not tell an empty value from none).
    """
    for part in raw.split(b";"):
        eq = part.find(b"=")
        if eq < 0:
            continue
        if part[:eq].lstrip(b" ") == name:
            v = part[eq + 1 :]
            if len(v) >= 2 and v[0] == 0x22 and v[-1] == 0x22:
                v = v[1:-1]
            return v
    return b""


def generate_cookie_value(remote_address: str, local_address: str) -> str:
    """The value Envoy gives a generated hash cookie.

    Envoy (``generateCookie`` in thread_aware_lb_impl.cc, formerly the router)
    hashes the downstream connection: ``hex16(xxHash64(remote + local))`` with
    both addresses as Envoy prints them (``"10.0.0.1:51234"``,
    ``"[::1]:8080"``).  It does not hash the upstream host: the cookie is made
    *before* selection, and the host is then chosen by the hash of this value
    like any other cookie value, so the next request carrying the cookie maps
    to the same host.
    """
    return f"{_xxh64((remote_address + local_address).encode()):016x}"


def make_set_cookie(name: str, value: str, path: str | None, ttl: float) -> bytes:
    """Envoy's ``makeSetCookieValue(name, value, path, ttl, httponly=true)``."""
    out = f'{name}="{value}"'
    max_age = int(ttl)
    if max_age != 0:
        out += f"; Max-Age={max_age}"
    if path:
        out += f"; Path={path}"
    return (out + "; HttpOnly").encode()


def _query_value(query: str, name: str) -> str | None:
    """First value of ``name`` in a raw query string (no percent-decoding, as Envoy)."""
    for part in query.split("&"):
        eq = part.find("=")
        if eq < 0:
            if part == name:
                return ""
        elif part[:eq] == name:
            return part[eq + 1 :]
    return None


def compute_hash(
    policy: HashPolicy,
    *,
    header: Callable[[bytes], bytes | None],
    query: str,
    source_ip: str,
    remote_address: str | None = None,
    local_address: str | None = None,
) -> tuple[int | None, bytes | None]:
    """The consistent-hash key of a request, as Envoy's ``HashPolicyImpl::generateHash``.

    Returns ``(hash_key, set_cookie)``: ``hash_key`` is None when the request
    lacks the key (pass it to ``choose`` anyway: a hash balancer then picks a
    random host, as Envoy does); ``set_cookie`` is a ``Set-Cookie`` header value
    the caller must add to the downstream response, or None.

    Arguments:
      ``header(name)``: the first value of the lower-case header ``name``.  For
        ``cookie`` give the whole Cookie header; HTTP/2 cookie crumbs joined
        with ``"; "``.
      ``query``: the raw query string of ``:path`` -- what follows the first
        ``?``, not percent-decoded -- or ``""``.
      ``source_ip``: the downstream peer IP as text (``"10.1.2.3"``, ``"::1"``).
      ``remote_address``/``local_address``: the downstream connection's peer
        and local ``ip:port`` (IPv6 as ``[ip]:port``), used only to generate a
        cookie; ``remote_address`` defaults to ``source_ip``.

    Keys (exactly one is set in the policy):
      header: ``xxHash64(value)``.  Only the first value is seen; Envoy hashes
        all values of a repeated header sorted and concatenated.
      cookie: ``xxHash64(value)`` of the named cookie (surrounding quotes
        removed).  When the request lacks it and ``cookie_ttl > 0`` (the
        ``HashPolicy`` contract), the cookie is *generated* here, Envoy's way:
        value = ``generate_cookie_value(remote_address, local_address)``, the
        key is ``xxHash64`` of that value, and ``set_cookie`` is
        ``name="value"; Max-Age=<int ttl>; Path=<path>; HttpOnly``.  The caller
        chooses the host with the returned key and sends the Set-Cookie; the
        client's next request carries the cookie and hashes to the same host
        for as long as the endpoint set is unchanged.  Pure: nothing depends on
        the upstream host, so there is no second phase.
      source IP: ``xxHash64(source_ip)``; None when empty.
      query parameter: ``xxHash64`` of the first value (``""`` for a bare
        ``?name``); None when absent.
    """
    name = policy.header_name
    if name is not None:
        v = header(name.encode("latin-1"))
        return (None if v is None else _xxh64(v)), None
    cookie = policy.cookie_name
    if cookie is not None:
        raw = header(b"cookie")
        value = _parse_cookie(raw, cookie.encode("latin-1")) if raw else b""
        if value:
            return _xxh64(value), None
        ttl = policy.cookie_ttl
        if ttl > 0:
            generated = generate_cookie_value(remote_address or source_ip, local_address or "")
            return _xxh64(generated.encode()), make_set_cookie(cookie, generated, policy.cookie_path, ttl)
        return None, None
    if policy.use_source_ip:
        return (_xxh64(source_ip.encode()) if source_ip else None), None
    param = policy.query_parameter
    if param is not None:
        qv = _query_value(query, param) if query else None
        return (None if qv is None else _xxh64(qv.encode("utf-8", "surrogateescape"))), None
    return None, None
