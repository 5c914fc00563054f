"""Image URL + caption extraction from page HTML, as MetaCLIP reads Common Crawl pages."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.html_extract import _resolve_with_urljoin, absolute_http_url, best_srcset_candidate, extract_images

PAGE_URL = "https://news.example.com/2024/story.html"


def test_alt_title_and_data_image_title_each_give_a_pair():
    html = '<img src="a.jpg" alt="A red fox" title="Fox" data-image-title="Vulpes vulpes" class="x">'
    assert extract_images(html, PAGE_URL) == [
        ("https://news.example.com/2024/a.jpg", "A red fox"),
        ("https://news.example.com/2024/a.jpg", "Fox"),
        ("https://news.example.com/2024/a.jpg", "Vulpes vulpes"),
    ]


def test_urls_resolve_against_base_href_and_page():
    html = """<head><base href="https://cdn.example.net/assets/"></head>
    <img src="x/1.png" alt="one"><img src="/root.png" alt="two"><img src="//other.org/3.png#frag" alt="three">
    <img src="http://abs.com/4.png" alt="four">"""
    assert extract_images(html, PAGE_URL) == [
        ("https://cdn.example.net/assets/x/1.png", "one"),
        ("https://cdn.example.net/root.png", "two"),
        ("https://other.org/3.png", "three"),
        ("http://abs.com/4.png", "four"),
    ]


def test_srcset_and_lazy_loading_give_one_image():
    html = """<img srcset="s.jpg 320w, xl.jpg 1600w, m.jpg 800w" alt="widths">
    <img srcset="a.jpg, b.jpg 2x" alt="densities">
    <img src="data:image/gif;base64,R0lGOD" data-src="real.jpg" alt="lazy">
    <img src="shown.jpg" srcset="big.jpg 2000w" alt="src wins">"""
    assert extract_images(html, PAGE_URL) == [
        ("https://news.example.com/2024/xl.jpg", "widths"),
        ("https://news.example.com/2024/b.jpg", "densities"),
        ("https://news.example.com/2024/real.jpg", "lazy"),
        ("https://news.example.com/2024/shown.jpg", "src wins"),
    ]


def test_figcaption_is_a_caption_for_the_figure_image():
    html = """<figure><a href="#"><img src="f.jpg"></a>
    <figcaption>The <em>harbour</em> at dawn,
      1901</figcaption></figure><img src="g.jpg" alt="outside">"""
    assert extract_images(html, PAGE_URL) == [
        ("https://news.example.com/2024/f.jpg", "The harbour at dawn, 1901"),
        ("https://news.example.com/2024/g.jpg", "outside"),
    ]


def test_duplicates_and_unusable_images_are_dropped():
    html = """<img src="a.jpg" alt="Same"><img src="a.jpg" alt="Same"><img src="./a.jpg" alt=" Same ">
    <img src="a.jpg" alt="Other"><img alt="no source"><img src="javascript:void(0)" alt="js">
    <img src="mailto:x@y.z" alt="mail"><img src="b.jpg"><img src="c.jpg" alt="   ">"""
    assert extract_images(html, PAGE_URL) == [
        ("https://news.example.com/2024/a.jpg", "Same"),
        ("https://news.example.com/2024/a.jpg", "Other"),
    ]


def test_entities_and_broken_markup_do_not_break_extraction():
    html = '<div><img src="x.jpg?a=1&amp;b=2" alt="Tom &amp; Jerry"><p><img src=y.jpg alt=unquoted><table><td>'
    assert extract_images(html, PAGE_URL) == [
        ("https://news.example.com/2024/x.jpg?a=1&b=2", "Tom & Jerry"),
        ("https://news.example.com/2024/y.jpg", "unquoted"),
    ]
    assert extract_images(b"\x00\xff garbage <<<>>>", PAGE_URL) == []


@settings(deadline=None)  # a shared 2-core CI machine must not turn slowness into failures
@given(st.lists(st.tuples(st.integers(1, 5000), st.sampled_from(["w", "x"])), min_size=1, max_size=6, unique=True))
def test_srcset_picks_the_largest_rendition(descriptors):
    srcset = ", ".join(f"img{i}.jpg {size}{unit}" for i, (size, unit) in enumerate(descriptors))
    widths = [(size, i) for i, (size, unit) in enumerate(descriptors) if unit == "w"]
    pool = widths or [(size, i) for i, (size, unit) in enumerate(descriptors)]
    best_size = max(size for size, _ in pool)
    expected = next(i for size, i in pool if size == best_size)
    assert best_srcset_candidate(srcset) == f"img{expected}.jpg"


URL_PIECES = st.sampled_from(["http://", "https://", "HTTP://", "//", "/", "./", "../", "a", "B.jpg", "?", "#",
                              "x=1&y", ":", "@", "[::1]", "\\", "\t", " ", "%20", "é", "..", ".", "mailto:", ""])


@settings(max_examples=500, deadline=None)
@given(st.lists(URL_PIECES, max_size=8).map("".join),
       st.sampled_from(["https://ex.com/dir/page.html?q=1#f", "http://h.org", "http://h.org/a/b/", "HTTP://h.org/x"]))
def test_fast_url_resolution_equals_urljoin(value, base):
    """The hand-written fast path gives exactly what urljoin + urlsplit give (None for non-http results)."""
    stripped = value.strip()
    skipped = not stripped or stripped.startswith(("data:", "javascript:", "blob:", "#"))
    assert absolute_http_url(value, base) == (None if skipped else _resolve_with_urljoin(stripped, base))
