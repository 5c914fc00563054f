"""The dataset card as a user sees it: a demo build with hostile captions, opened in a real headless Chromium."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageStat

from browser_helpers import open_page, require_chromium
from build_helpers import build

pytestmark = pytest.mark.timeout(600)

SCRIPT_CAPTION = "zanzibar at dusk <script>window.__pwned = 'script'</script>"
IMG_CAPTION = "quokka smiling <img src=x onerror=\"window.__pwned = 'onerror'\">"
CHARTS = ["funnel", "rejects", "queries", "caption-lengths", "languages", "image-sizes", "hosts"]


@pytest.fixture(scope="module")
def card(demo_site, demo_url, tmp_path_factory):
    """The demo web plus two captions that would run script if the card pasted them in as HTML. A short query
    list (fewer queries than the card's grid has cells) puts every matched query, both hostile ones included,
    in the sample grid."""
    require_chromium()  # before the build: no browser, no point building
    folder = tmp_path_factory.mktemp("card")
    good = next(path for path, outcome in demo_site.expected.items() if outcome == "success")
    rows = [(demo_url + path, alt) for path, alt, _page in demo_site.pairs]
    rows += [(f"{demo_url}{good}?copy={i}", caption) for i, caption in enumerate((SCRIPT_CAPTION, IMG_CAPTION))]
    pairs = folder / "pairs.parquet"
    pq.write_table(pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]}), pairs)
    queries = folder / "queries.txt"
    queries.write_text("\n".join(["blue", "red", "garden", "mountain", "snow", "city street", "zanzibar",
                                  "quokka"]) + "\n")
    return build(str(pairs), str(queries), folder / "out")


def test_the_card_renders_with_every_chart_and_hostile_captions_as_text(card):
    page = open_page(f"file://{card}/report.html", {
        "charts": """Object.fromEntries([...document.querySelectorAll('img.chart')].map(i =>
                      [i.id.replace('chart-', ''), [i.complete, i.naturalWidth, i.naturalHeight,
                       i.getBoundingClientRect().width, i.getBoundingClientRect().height]]))""",
        "captions": "[...document.querySelectorAll('figcaption.caption')].map(c => c.textContent)",
        "thumbnails": "[...document.querySelectorAll('figure.sample img')].filter(i => i.naturalWidth > 0).length",
        "pwned": "window.__pwned === undefined ? null : String(window.__pwned)",
        "scripts": "document.querySelectorAll('script').length",
        "injected_images": "document.querySelectorAll('img[onerror], img[src=\"x\"]').length",
        "text": "document.body.innerText",
    })
    v = page.values
    assert page.console_errors == []
    # Every chart is there, decoded, and laid out with a real size.
    assert sorted(v["charts"]) == sorted(CHARTS)
    for name, (complete, natural_w, natural_h, w, h) in v["charts"].items():
        assert complete and natural_w > 100 and natural_h > 50 and w > 100 and h > 50, name
    # The hostile captions are shown, character for character, as text; nothing of them runs or renders.
    assert SCRIPT_CAPTION in v["captions"] and IMG_CAPTION in v["captions"]
    assert v["pwned"] is None and v["scripts"] == 0 and v["injected_images"] == 0
    assert v["thumbnails"] >= 2
    for words in ("dataset card", "kept samples", "queries at t", "Decontamination"):
        assert words in v["text"]
    # The screenshot shows a page, not a blank: many distinct colours and real contrast.
    shot = Image.open(io.BytesIO(page.screenshot)).convert("RGB")
    assert shot.size == (1200, 900)
    assert len(shot.getcolors(1 << 20) or []) > 50 and max(ImageStat.Stat(shot).stddev) > 20
