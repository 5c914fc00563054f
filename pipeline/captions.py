"""Caption normalization and filtering: alt text as it really comes off the web, made clean or rejected.

`clean_caption` is the pure core; the Beam step in build_wit only routes its rejects to `rejects/`.
Every rejection carries a reason from a fixed vocabulary (see REASONS), recorded with stage "caption".
"""

import html
import unicodedata
from dataclasses import dataclass

import ftfy

REASONS = {
    "empty": "nothing left after cleaning",
    "too_short": "fewer characters than --min-caption-chars",
    "too_long": "more characters than --max-caption-chars",
}


@dataclass(frozen=True)
class CaptionRules:
    min_chars: int = 5
    max_chars: int = 1000


def normalize(text: str) -> str:
    """Fix mojibake (ftfy), decode HTML entities, compose Unicode (NFC) and collapse whitespace."""
    text = ftfy.fix_text(text)
    # ftfy unescapes entities only where it is sure; alt text taken from raw HTML attributes often still
    # holds `&amp;` or `&#39;`, so unescape explicitly, then let ftfy clean what that revealed.
    if "&" in text:
        text = ftfy.fix_text(html.unescape(text))
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def clean_caption(text: str | None, rules: CaptionRules = CaptionRules()) -> tuple[str | None, str | None]:
    """(clean caption, None) when kept, (None, reason) when rejected."""
    caption = normalize(text or "")
    if not caption:
        return None, "empty"
    if len(caption) < rules.min_chars:
        return None, "too_short"
    if len(caption) > rules.max_chars:
        return None, "too_long"
    return caption, None
