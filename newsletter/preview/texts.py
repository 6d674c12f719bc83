"""The preview page's own words, in the newsletter's language (English and Dutch)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

FALLBACK = "en"

_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "preview": "Preview",
        "connecting": "Connecting…",
        "reconnecting": "Reconnecting…",
        "rebuilding": "Rebuilding…",
        "failed": "Build failed",
        "live": "Live · built",
        "took": "in {ms} ms",
        "kept": "(showing the last version that built)",
        "width": "Width",
        "desktop": "Desktop",
        "desktop_title": "Desktop width: 600 px and more",
        "mobile": "Mobile",
        "mobile_title": "Mobile width: 375 px",
        "part": "Part",
        "plain_text": "Plain text",
        "subscriber": "Subscriber",
        "notes": "Notes",
        "inbox": "How the email shows in an inbox",
        "from": "From:",
        "subject": "Subject:",
        "preheader": "Preheader:",
        "the_email": "The email",
        "sample_subscriber": "{name} (sample subscriber)",
        "no_name": "No name (defaults show)",
        "hostile_name": "Long hostile name",
        "draft_note": "{name} is a draft: marked here, left out when the issue is sent",
    },
    "nl": {
        "preview": "Voorbeeld",
        "connecting": "Verbinden…",
        "reconnecting": "Opnieuw verbinden…",
        "rebuilding": "Opnieuw opbouwen…",
        "failed": "Opbouwen mislukt",
        "live": "Live · opgebouwd om",
        "took": "in {ms} ms",
        "kept": "(de laatste versie die wel lukte staat eronder)",
        "width": "Breedte",
        "desktop": "Computer",
        "desktop_title": "Breedte van een computerscherm: 600 px en meer",
        "mobile": "Telefoon",
        "mobile_title": "Breedte van een telefoon: 375 px",
        "part": "Deel",
        "plain_text": "Platte tekst",
        "subscriber": "Abonnee",
        "notes": "Opmerkingen",
        "inbox": "Zo staat de e-mail in een inbox",
        "from": "Van:",
        "subject": "Onderwerp:",
        "preheader": "Voorvertoning:",
        "the_email": "De e-mail",
        "sample_subscriber": "{name} (voorbeeldabonnee)",
        "no_name": "Zonder naam (standaardwaarden)",
        "hostile_name": "Lange, vijandige naam",
        "draft_note": "{name} is een concept: hier gemarkeerd, niet verstuurd met het nummer",
    },
}


def page_texts(language: str) -> Mapping[str, str]:
    """The page's words for `language` (`nl`, `nl-BE`); English for languages not translated."""
    code = language.replace("_", "-").split("-")[0].lower()
    return MappingProxyType({**_TEXTS[FALLBACK], **_TEXTS.get(code, {})})


def page_language(language: str) -> str:
    """The language the page is shown in: the newsletter's when translated, else English."""
    code = language.replace("_", "-").split("-")[0].lower()
    return code if code in _TEXTS else FALLBACK
