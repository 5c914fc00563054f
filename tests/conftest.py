"""Shared fixtures: the demo web served on 127.0.0.1 once per test session, and its input files."""

import pytest

from openwit.demo_web import DemoWebServer, generate_site, write_inputs


@pytest.fixture(scope="session")
def demo_site():
    return generate_site(seed=0)


@pytest.fixture(scope="session")
def demo_url(demo_site):
    with DemoWebServer(demo_site) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def demo_inputs(demo_site, demo_url, tmp_path_factory):
    """(pairs.parquet, queries.txt) describing the demo web at its live address."""
    return write_inputs(demo_site, demo_url, str(tmp_path_factory.mktemp("demo-input")))
