"""A griffe extension for the API pages: ``Example:`` sections are read as ``Examples:``.

The library's docstrings follow the Google style guide, which titles a doctest section
``Example:``; griffe's Google parser knows only the plural, and would render the singular
as an admonition of plain Markdown (``>>>`` lines as block quotes). Renaming the title
before parsing gives those sections the same doctest code blocks as ``Examples:``.
Configured in ``mkdocs.yml`` (``extensions:`` of the python handler).
"""

import re

import griffe

__all__ = ["GoogleExampleSections"]

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)


class GoogleExampleSections(griffe.Extension):
    """Rewrites a docstring's ``Example:`` section titles to ``Examples:`` once loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        """Renames the section titles of ``obj``'s own docstring (members get their call).

        Args:
            obj: The object griffe has just loaded.
            **kwargs: Other arguments of the event (unused).
        """
        del kwargs
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
