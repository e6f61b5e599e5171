"""The test PBX's rendering of several app nodes' FastAGI URLs (``CC_AGI_URLS``, tried by ``[callcenter-agi]``)."""

from __future__ import annotations

import pytest

from callcenter.pbx.render import PbxSpec, render_globals_conf

SECRET = "s" * 20


def test_one_node_leaves_the_list_empty() -> None:
    spec = PbxSpec(agi_url="agi://10.0.0.1:4573", agi_secret=SECRET)
    assert spec.cc_agi_urls == ""
    assert f"CC_AGI_URL=agi://10.0.0.1:4573/{SECRET}" in render_globals_conf(spec).splitlines()


def test_nodes_are_listed_in_order_with_the_secret() -> None:
    spec = PbxSpec(agi_url="agi://10.0.0.1:4573", agi_fallbacks=("agi://10.0.0.2:4573/",), agi_secret=SECRET)
    expected = f"CC_AGI_URLS=agi://10.0.0.1:4573/{SECRET}|agi://10.0.0.2:4573/{SECRET}"
    assert expected in render_globals_conf(spec).splitlines()


@pytest.mark.parametrize(
    "fallbacks",
    [("http://10.0.0.2:4573",), ("agi://10.0.0.2:4573|agi://x",), ("agi://a:1", "agi://b:1", "agi://c:1")],
)
def test_bad_or_too_many_nodes_are_refused(fallbacks: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        PbxSpec(agi_url="agi://10.0.0.1:4573", agi_fallbacks=fallbacks)


def test_the_demo_lists_its_nodes_in_order() -> None:
    from callcenter.pbx.demo import demo_spec

    assert demo_spec(agi_secret=SECRET).cc_agi_urls == ""
    urls = demo_spec(agi_port=4573, agi_secret=SECRET, nodes=3).cc_agi_urls.split("|")
    assert urls == [f"agi://127.0.0.1:{port}/{SECRET}" for port in (4573, 4574, 4575)]
