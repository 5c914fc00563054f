"""Shared fixtures: the demo web served on 127.0.0.1 once per test session, its input files, and one build of it
(read-only for the tests that use it)."""

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


@pytest.fixture(scope="session")
def demo_build(demo_inputs, tmp_path_factory):
    """Output folder of `openwit build` over the demo web (what `openwit demo` builds); tests only read it."""
    from build_helpers import build

    pairs, queries = demo_inputs
    return build(pairs, queries, tmp_path_factory.mktemp("demo-build") / "ds")
