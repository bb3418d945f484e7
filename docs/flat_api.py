"""An MkDocs hook: the flat API page's table of every name in ``maml_jax.__all__``.

``docs/api/index.md`` holds the marker ``<!-- flat-api -->``; this hook replaces it with
one row per exported name (griffe reads the package statically, nothing is imported): the
name linked to where it is documented (its defining module's page, through autorefs, so a
name whose module page does not document it fails the strict build) and the first line of
its docstring. The table follows ``__all__`` and cannot drift from it. Configured in
``mkdocs.yml`` (``hooks:``).
"""

import griffe

__all__ = ["flat_api_table", "on_page_markdown"]

MARKER = "<!-- flat-api -->"


def flat_api_table(package: str = "maml_jax") -> str:
    """The Markdown table of the package's exports.

    Args:
        package: The package whose ``__all__`` is listed.

    Returns:
        A Markdown table: name (a cross-reference), defining module, summary line.
    """
    module = griffe.load(package, search_paths=["."])
    rows = ["| name | defined in | what it is |", "|---|---|---|"]
    for name in module.exports or ():
        obj = module.members[name]
        path = obj.target_path if obj.is_alias else obj.path
        home = path if obj.is_module else path.rsplit(".", 1)[0]
        doc = obj.docstring.value.strip().splitlines()[0] if obj.docstring else ""
        doc = doc.replace("|", "\\|")
        rows.append(f"| [`{name}`][{path}] | `{home}` | {doc} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    """Fills the marker of the flat API page (every other page is returned unchanged).

    Args:
        markdown: The page's Markdown source.
        page: The MkDocs page.
        **kwargs: The event's other arguments (unused).

    Returns:
        The Markdown, with the table in place of the marker.
    """
    del kwargs
    if page.file.src_uri != "api/index.md":
        return markdown
    return markdown.replace(MARKER, flat_api_table())
