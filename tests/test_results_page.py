"""The results page and the README's headline table match the committed result files."""

import pathlib
import re

from experiments import results_page

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_results_page_is_up_to_date(capsys):
    status = results_page.main(["--check"])
    assert status == 0, capsys.readouterr().err


def test_readme_numbers_come_from_the_headline_block():
    """Outside the generated block the README quotes no measured number (a %, ms, s/step)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(results_page.HEADLINE_BEGIN)
    end = text.index(results_page.HEADLINE_END)
    outside = text[:start] + text[end:]
    measured = re.findall(r"\d+(?:\.\d+)?\s*(?:%|ms\b|steps/s|s per\b|minutes\b)", outside)
    assert not measured, measured


def test_every_section_names_its_scale_and_files():
    for section in results_page.SECTIONS:
        assert section.scale and section.paths(), section.title
    page = results_page.render_page()
    for section in results_page.SECTIONS:
        assert f"### {section.title}" in page
        assert f"**Scale: {section.scale}.**" in page
