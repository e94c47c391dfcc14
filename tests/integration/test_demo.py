"""The Bookinfo demo end to end: real app processes, a sidecar per app, an ingress gateway.

productpage calls details and reviews through its own sidecar with ``Host:
reviews:9080`` and forwards ``end-user``; the reviews VirtualService sends
jason to v2 and everyone else to v1; the 75/25 variant splits v1/v3.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from meshproxy.demo.runner import Demo, default_config_dir
from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def productpage(url: str, user: str | None = None) -> str:
    request = urllib.request.Request(url + "/productpage", headers={"end-user": user} if user else {})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def reviews_version(page: str) -> str:
    for line in page.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "reviews":
            return words[1]
    raise AssertionError(f"no reviews line in:\n{page}")


@pytest.fixture(scope="module")
def demo():  # type: ignore[no-untyped-def]
    with Demo(gateway_port=free_port(), outbound_port_base=free_port(), admin_port_base=free_port()) as d:
        yield d


def test_productpage_shows_reviews_v1_for_anonymous(demo) -> None:  # type: ignore[no-untyped-def]
    page = productpage(demo.gateway_url)
    assert "productpage v1" in page
    assert "details v1" in page
    assert reviews_version(page) == "v1"


def test_jason_sees_reviews_v2_with_ratings(demo) -> None:  # type: ignore[no-untyped-def]
    for _ in range(5):
        page = productpage(demo.gateway_url, "jason")
        assert reviews_version(page) == "v2"
        assert "ratings v1" in page


def test_gateway_does_not_route_unknown_paths(demo) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(demo.gateway_url + "/not-in-the-virtual-service", timeout=10)
    assert err.value.code == 404
