"""/docs works with nothing reachable but tokenbank: every asset it loads is ours."""

from __future__ import annotations

import re

from tests.api.conftest import Api

ASSET_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


async def test_the_docs_page_loads_nothing_from_another_host(api: Api) -> None:
    page = await api.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    references = ASSET_REFERENCE.findall(page.text)
    assert references, page.text
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = await api.client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 500, reference
    assert "url: '/openapi.json'" in page.text
    assert (await api.client.get("/openapi.json")).status_code == 200


async def test_no_page_from_a_cdn_is_served(api: Api) -> None:
    for path in ("/redoc", "/docs/oauth2-redirect"):
        assert (await api.client.get(path)).status_code == 404, path
