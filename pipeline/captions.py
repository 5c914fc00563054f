"""Caption normalization and filtering: alt text as it really comes off the web, made clean or rejected.

`clean_caption` is the pure core; `CaptionCleaner` wraps it with the optional language filter, whose lingua
detector is built once per worker (call `setup()` from `DoFn.setup`, or let the first `clean` build it).
The Beam step in build_wit only routes rejects to `rejects/`. Every rejection carries a reason from a fixed
vocabulary (see REASONS), recorded with stage "caption".
"""

import html
import re
import unicodedata
from dataclasses import dataclass

import ftfy

REASONS = {
    "empty": "nothing left after cleaning",
    "too_short": "fewer characters than --min-caption-chars",
    "too_long": "more characters than --max-caption-chars",
    "file_name": "the caption is an image file name or a camera's automatic name (IMG_2034.JPG, DSC0001)",
    "url": "the caption is a bare URL",
    "boilerplate": "the caption is a generic word such as 'image', 'photo', 'logo' or 'click here'",
    "language": "not in the languages given to --languages with at least --language-confidence",
}

# Generic alt texts that CMSs and page builders fill in; they describe no image. Compared after lowercasing,
# stripping punctuation and a trailing number ("image 3", "photo-12").
BOILERPLATE = frozenset(
    phrase.strip()
    for phrase in """
    image, images, img, picture, pictures, pic, pics, photo, photos, photograph, thumbnail, thumb, icon, logo,
    banner, avatar, profile picture, profile photo, placeholder, spacer, blank, pixel, click here,
    click to enlarge, click to zoom, enlarge, zoom, view larger, view image, image not found, no image,
    no photo, loading, untitled, default, alt, alt text, featured image, header image, hero image, screenshot,
    gallery, slide, button, arrow, next, previous, prev, close, menu, search, home, share, facebook, twitter,
    instagram, pinterest, linkedin, youtube, email, print, rss, advertisement, ad, read more, learn more,
    more, download, play, play video, video
    """.split(",")
)

_IMAGE_EXTENSIONS = r"(?:jpe?g|png|gif|webp|bmp|tiff?|svg|heic|heif|avif|raw|cr2|nef|dng)"
# A whole caption that is a file name: no spaces inside (or separators only), ending in an image extension.
_FILE_NAME = re.compile(rf"^[\w\-.~+()%\[\] ]{{0,200}}\.{_IMAGE_EXTENSIONS}$", re.IGNORECASE)
# Names cameras and phones give pictures: IMG_2034, DSC0001, DSCN1234, P1010203, GOPR0042, PXL_2021..., or a
# bare timestamp such as 20160126_135930 — with or without an extension.
_CAMERA_NAME = re.compile(
    r"^(?:(?:img|dsc[nf]?|dcim|pict?|gopr|gp|mvimg|pxl|sam|cimg|imag|wp|photo|vid|screenshot)[-_ ]?\d[\d_\-]*"
    r"|p\d{6,}|\d{8}[-_ ]?\d{6}(?:[-_]\d+)?|\d{4}-\d{2}-\d{2}[ _]\d{2}[.\-:]\d{2}[.\-:]\d{2})"
    rf"(?:[-_ ]?\(\d+\))?(?:\.{_IMAGE_EXTENSIONS})?$",
    re.IGNORECASE,
)
_BARE_URL = re.compile(r"^(?:(?:https?|ftp)://|www\.)\S+$|^[\w\-]+(?:\.[\w\-]+)+/\S*$", re.IGNORECASE)
_TRAILING_NUMBER = re.compile(r"[\s\-_#]*\d+$")
_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclass(frozen=True)
class CaptionRules:
    min_chars: int = 5
    max_chars: int = 1000
    # ISO 639-1 codes ("en", "de"); empty means no language filter.
    languages: tuple[str, ...] = ()
    # lingua's confidence that the caption is in one of `languages`, from 0 to 1.
    language_confidence: float = 0.5


def normalize(text: str) -> str:
    """Fix mojibake (ftfy), decode HTML entities, compose Unicode (NFC) and collapse whitespace."""
    if text.isascii() and text.isprintable() and "&" not in text:
        # Most alt text: no mojibake, entity, control character or composable letter for ftfy and NFC to
        # change (tests/test_captions.py checks it against the full path), and ftfy costs ~25 us a caption.
        return " ".join(text.split())
    text = ftfy.fix_text(text)
    # ftfy unescapes entities only where it is sure; alt text taken from raw HTML attributes often still
    # holds `&amp;` or `&#39;`, so unescape explicitly, then let ftfy clean what that revealed.
    if "&" in text:
        text = ftfy.fix_text(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def _is_boilerplate(caption: str) -> bool:
    key = _PUNCTUATION.sub(" ", caption.lower())
    key = " ".join(_TRAILING_NUMBER.sub("", key).split())
    return key in BOILERPLATE or not key


def clean_caption(text: str | None, rules: CaptionRules = CaptionRules()) -> tuple[str | None, str | None]:
    """(clean caption, None) when kept, (None, reason) when rejected. No language filter: see CaptionCleaner."""
    caption = normalize(text or "")
    if not caption:
        return None, "empty"
    if len(caption) > rules.max_chars:
        return None, "too_long"
    # Checked before the length floor, so "IMG_1.jpg" is reported as what it is, not as merely short.
    if _CAMERA_NAME.match(caption) or _FILE_NAME.match(caption):
        return None, "file_name"
    if _BARE_URL.match(caption):
        return None, "url"
    if _is_boilerplate(caption):
        return None, "boilerplate"
    if len(caption) < rules.min_chars:
        return None, "too_short"
    return caption, None


# Frequent web languages that the detector always weighs against the user's languages. lingua's confidence is
# relative to the languages it knows: with English alone, every text would be "100% English". A few dozen
# contrast languages keep the detector fast while a German or Japanese caption still scores low for English.
_CONTRAST_LANGUAGES = (
    "en de fr es it pt nl ru pl tr ja zh ko ar fa vi id sv cs uk hu ro el da fi nb he th hi"
).split()


def build_language_detector(languages: tuple[str, ...], low_accuracy: bool = False):
    """A lingua detector over `languages` plus the contrast set; raises ValueError for an unknown code.
    low_accuracy: trigram models only, loaded in ~1 s instead of ~20 (the dataset card's language sample)."""
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = []
    for code in (*languages, *_CONTRAST_LANGUAGES):
        iso = getattr(IsoCode639_1, code.strip().upper(), None)
        if iso is None:
            raise ValueError(f"unknown language code {code!r}; use ISO 639-1 codes such as en, de, fr")
        if iso not in codes:
            codes.append(iso)
    builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
    return (builder.with_low_accuracy_mode() if low_accuracy else builder).build()


class CaptionCleaner:
    """`clean_caption` plus the optional language filter. Pickles (the detector is rebuilt where it runs)."""

    def __init__(self, rules: CaptionRules = CaptionRules()):
        self.rules = rules
        self._detector = None
        self._targets = ()
        if rules.languages:
            build_language_detector(rules.languages)  # fail now, at pipeline construction, on a bad code

    def setup(self) -> None:
        """Build the language detector; call once per worker (DoFn.setup)."""
        if self.rules.languages and self._detector is None:
            from lingua import IsoCode639_1, Language

            self._detector = build_language_detector(self.rules.languages)
            self._targets = tuple(
                Language.from_iso_code_639_1(getattr(IsoCode639_1, code.strip().upper()))
                for code in self.rules.languages
            )

    def __getstate__(self):
        return {"rules": self.rules}

    def __setstate__(self, state):
        # Not __init__: it validates by building a detector, which setup() will build anyway where it runs.
        self.rules, self._detector, self._targets = state["rules"], None, ()

    def clean(self, text: str | None) -> tuple[str | None, str | None]:
        caption, reason = clean_caption(text, self.rules)
        if caption is None or not self.rules.languages:
            return caption, reason
        if self._detector is None:
            self.setup()
        confidence = max(self._detector.compute_language_confidence(caption, lang) for lang in self._targets)
        if confidence < self.rules.language_confidence:
            return None, "language"
        return caption, None
