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


def test_the_page_and_reproduce_share_the_papers_schedule(tmp_path, monkeypatch):
    """A run that agrees with its cell in epochs, iterations, filters and meta-batch but was
    tested on fewer tasks is reduced for reproduce, and so on the page (which used to read
    those four keys only)."""
    import json

    from experiments import reproduce
    from experiments.configs import omniglot_5w1s_mamlpp

    paper = omniglot_5w1s_mamlpp.get_config().to_dict()
    ran = {**paper, "num_test_tasks": 100}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(ran))
    monkeypatch.setattr(results_page, "ROOT", tmp_path)
    row = next(line for line in results_page._paper_table([tmp_path / "run" / "config.json"])
               if line.startswith("| omniglot_5w1s | MAML++ |"))
    assert "(reduced: num_test_tasks=100 (paper 600))" in row and "full schedule" not in row
    assert reproduce.schedule_label(ran, paper, None) == \
        "reduced: num_test_tasks=100 (paper 600)"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text(json.dumps(paper))
    row = next(line for line in results_page._paper_table([tmp_path / "full" / "config.json"])
               if line.startswith("| omniglot_5w1s | MAML++ |"))
    assert "(full schedule)" in row
