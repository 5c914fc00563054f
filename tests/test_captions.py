"""Caption cleaning and filters, on alt text as it really comes off the web."""

import html
import pickle
import unicodedata

import ftfy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.captions import REASONS, CaptionCleaner, CaptionRules, clean_caption, normalize


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  A  red\tcar\n on the   beach ", "A red car on the beach"),
        ("Tom &amp; Jerry&#39;s house", "Tom & Jerry's house"),
        ("cafÃ© on the corner", "café on the corner"),  # UTF-8 read as Latin-1 (mojibake)
        ("Cafe\u0301 Noir", "Caf\u00e9 Noir"),  # decomposed accent composed to NFC
        ("&lt;b&gt;bold&lt;/b&gt; claim", "<b>bold</b> claim"),
    ],
)
def test_normalize_real_alt_text(raw, expected):
    assert normalize(raw) == expected
    assert clean_caption(raw) == (expected, None)


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("  \t\n ", "empty"),
        ("cat", "too_short"),
        ("x" * 1001, "too_long"),
        ("IMG_2034.JPG", "file_name"),
        ("20160126_135930.jpg", "file_name"),
        ("DSC0001", "file_name"),
        ("DSCN4521.jpg", "file_name"),
        ("PXL_20230101_123456789", "file_name"),
        ("IMG_1234 (2).jpg", "file_name"),
        ("holiday-photo-2.png", "file_name"),
        ("https://example.com/images/cat.jpg", "url"),
        ("www.example.com", "url"),
        ("image", "boilerplate"),
        ("Photo", "boilerplate"),
        ("logo", "boilerplate"),
        ("Click here!", "boilerplate"),
        ("Image 3", "boilerplate"),
        ("thumbnail-12", "boilerplate"),
        ("&nbsp;", "empty"),
    ],
)
def test_rejects_with_reason(raw, reason):
    assert clean_caption(raw) == (None, reason)
    assert reason in REASONS


@pytest.mark.parametrize(
    "keep",
    ["Photo of a dog playing fetch", "Logo of the Red Cross", "The image of Dorian Gray", "IMG Academy campus",
     "2016 Olympic stadium in Rio", "Read the label"],
)
def test_captions_that_merely_contain_filter_words_are_kept(keep):
    assert clean_caption(keep) == (keep, None)


def test_limits_are_configurable():
    rules = CaptionRules(min_chars=2, max_chars=10)
    assert clean_caption("sky", rules) == ("sky", None)
    assert clean_caption("a long caption here", rules) == (None, "too_long")


def test_language_filter_keeps_only_named_languages():
    cleaner = CaptionCleaner(CaptionRules(languages=("en",), language_confidence=0.5))
    cleaner.setup()
    assert cleaner.clean("A red car parked near the beach at sunset") == (
        "A red car parked near the beach at sunset", None)
    assert cleaner.clean("Ein rotes Auto parkt am Strand bei Sonnenuntergang") == (None, "language")
    assert cleaner.clean("東京タワーの夜景がとても綺麗です") == (None, "language")
    # Other filters run first and keep their own reason.
    assert cleaner.clean("IMG_0001.jpg") == (None, "file_name")

    both = CaptionCleaner(CaptionRules(languages=("en", "de")))
    assert both.clean("Ein rotes Auto parkt am Strand bei Sonnenuntergang")[1] is None


def test_cleaner_pickles_and_rebuilds_its_detector():
    cleaner = pickle.loads(pickle.dumps(CaptionCleaner(CaptionRules(languages=("fr",)))))
    assert cleaner.clean("Une voiture rouge garée près de la plage")[1] is None
    assert cleaner.clean("A red car parked near the beach at sunset") == (None, "language")


def test_unknown_language_code_fails_at_construction():
    with pytest.raises(ValueError, match="xx"):
        CaptionCleaner(CaptionRules(languages=("xx",)))


def test_without_languages_cleaner_equals_clean_caption():
    cleaner = CaptionCleaner()
    for raw in ["A red car on the beach", "IMG_1.jpg", "", "Tom &amp; Jerry at home"]:
        assert cleaner.clean(raw) == clean_caption(raw)


def full_normalize(text):
    """normalize() without its plain-ASCII shortcut."""
    text = ftfy.fix_text(text)
    if "&" in text:
        text = ftfy.fix_text(html.unescape(text))
    return " ".join(unicodedata.normalize("NFC", text).split())


@settings(max_examples=3000, deadline=None)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="&"), max_size=80)
       | st.sampled_from(["Ã©tÃ©", "caf\u00e9", "a&amp;b", "l&#39;eau", "  two\tspaces ", "A\u0301", "\x1b[31mred",
                          "line\r\nbreak", "\u201cquoted\u201d"]))
def test_plain_ascii_shortcut_is_the_full_normalization(text):
    assert normalize(text) == full_normalize(text)


def test_plain_ascii_captions_skip_ftfy(monkeypatch):
    # ftfy costs ~25 us a caption, ~17 vCPU-hours over 2.5B candidates (docs/SCALE.md); plain ASCII needs none of it.
    monkeypatch.setattr(ftfy, "fix_text", lambda text: pytest.fail(f"ftfy called on {text!r}"))
    assert normalize("A  photo of a cat, 2 kittens!") == "A photo of a cat, 2 kittens!"
