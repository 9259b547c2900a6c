"""Spanish and English: the Spanish catalog leaves nothing untranslated, Spanish is the default,
the browser's preference wins, and the top bar's switcher changes the language."""

import ast
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db

LOCALE = Path(settings.BASE_DIR) / "locale"
PAGES = ["/", "/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"]
MEMBER_PAGES = ["/dashboard/", "/dashboard/history/", "/dashboard/credits/", "/accounts/email/"]
# One visible string per language that only a translated page contains.
SPANISH = {"lang": 'lang="es"', "words": ["Iniciar sesión", "Idioma"]}
ENGLISH = {"lang": 'lang="en"', "words": ["Sign in", "Language"]}


def parse_po(path: Path) -> list[dict]:
    """A tiny .po parser: one dict per entry with msgid/msgid_plural/msgstr[n] and its flags."""
    entries: list[dict] = []
    entry: dict = {"flags": set()}
    key = None
    for raw in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = raw.strip()
        if not line:
            if "msgid" in entry:
                entries.append(entry)
            entry, key = {"flags": set()}, None
        elif line.startswith("#,"):
            entry["flags"] |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            continue  # comments, references, and obsolete (#~) entries
        elif match := re.match(
            r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(\".*\")$", line
        ):
            key = match.group(1)
            entry[key] = ast.literal_eval(match.group(2))
        elif line.startswith('"') and key:
            entry[key] += ast.literal_eval(line)
    return entries


def _untranslated(entries: list[dict]) -> list[str]:
    missing = []
    for entry in entries:
        if entry["msgid"] == "":
            continue  # the header
        translations = [value for key, value in entry.items() if key.startswith("msgstr")]
        if "fuzzy" in entry["flags"] or not translations or not all(translations):
            missing.append(entry["msgid"])
    return missing


def test_it_translates_every_string_of_the_spanish_catalog() -> None:
    entries = parse_po(LOCALE / "es" / "LC_MESSAGES" / "django.po")

    assert len(entries) > 100
    assert _untranslated(entries) == []
    header = entries[0]
    assert header["msgid"] == "" and "fuzzy" not in header["flags"]
    assert "Language: es" in header["msgstr"]


def test_it_ships_compiled_catalogs_no_older_than_their_sources() -> None:
    for language in ("es", "en"):
        po = LOCALE / language / "LC_MESSAGES" / "django.po"
        mo = po.with_suffix(".mo")
        assert mo.exists(), f"run compilemessages for {language}"
        assert mo.stat().st_mtime >= po.stat().st_mtime - 1, f"{mo} is older than {po}"


def test_it_keeps_placeholders_intact_in_spanish() -> None:
    placeholder = re.compile(r"%\([a-z_]+\)[-+ #0]*[sdrf]|\{[a-z_]*\}")
    for entry in parse_po(LOCALE / "es" / "LC_MESSAGES" / "django.po")[1:]:
        expected = sorted(set(placeholder.findall(entry["msgid"] + entry.get("msgid_plural", ""))))
        for key, value in entry.items():
            if key.startswith("msgstr"):
                assert sorted(set(placeholder.findall(value))) == expected or (
                    key == "msgstr[0]" and set(placeholder.findall(value)) <= set(expected)
                ), (entry["msgid"], value)


def _assert_language(html: str, language: dict) -> None:
    assert language["lang"] in html
    for word in language["words"]:
        assert word in html


@pytest.mark.parametrize("url", PAGES)
def test_it_speaks_spanish_by_default_and_english_when_the_browser_asks(url: str) -> None:
    _assert_language(Client().get(url).text, SPANISH)
    _assert_language(Client().get(url, HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").text, ENGLISH)


@pytest.mark.parametrize("url", MEMBER_PAGES)
def test_it_translates_the_signed_in_pages(alice_client: Client, url: str, workflow) -> None:
    spanish = alice_client.get(url).text
    english = alice_client.get(url, HTTP_ACCEPT_LANGUAGE="en").text

    assert 'lang="es"' in spanish and "Historial" in spanish and "créditos" in spanish
    assert 'lang="en"' in english and "History" in english and "credits" in english
    assert "Historial" not in english


def test_it_switches_language_from_the_top_bar(alice_client: Client) -> None:
    response = alice_client.post(
        "/i18n/setlang/", {"language": "en", "next": "/dashboard/credits/"}
    )

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/credits/"
    html = alice_client.get("/dashboard/credits/", HTTP_ACCEPT_LANGUAGE="es").text
    assert 'lang="en"' in html  # the explicit choice beats the browser's preference


def test_it_formats_dates_for_the_language(alice_client: Client) -> None:
    spanish = alice_client.get("/dashboard/credits/").text
    english = alice_client.get("/dashboard/credits/", HTTP_ACCEPT_LANGUAGE="en").text

    assert re.search(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", spanish)  # 24/11/2026 05:15
    assert re.search(r"\d{2}/\d{2}/\d{4} \d{1,2}:\d{2} [ap]\.m\.", english)  # 11/24/2026 5:15 a.m.
