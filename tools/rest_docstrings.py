"""A griffe extension that turns fewstep's reST docstrings into Markdown for the API pages.

fewstep's docstrings are written in reST, Python's own docstring language (``help()``, IDEs and
Sphinx read them as they are), while mkdocstrings renders Markdown. Without this extension the
API pages showed raw ``.. math::`` blocks and ``:func:`` roles. It rewrites, at docs build time
only (the sources stay reST):

* ``.. math::`` blocks and ``:math:`` roles to MathML (``latex2mathml``), which browsers render
  natively: the docs stay fully offline, with no MathJax or KaTeX script;
* ``:func:``, ``:class:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:``
  roles (with ``~`` and ``title <target>`` forms) to cross-references: a name that resolves to a
  fewstep object becomes an optional autoref (a link when the object is rendered, plain code
  otherwise); other names (``torch.nn.Module``) become code;
* reST literal blocks (a paragraph ending in ``::`` and an indented block) to fenced code;
* ``.. note::`` / ``.. warning::``-style directives to admonitions.

``tests/test_docs.py`` builds the site and fails if any raw reST reaches the HTML.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe
from latex2mathml.converter import convert as latex_to_mathml

ROLES = ("func", "class", "meth", "mod", "attr", "data", "exc", "obj")
_ROLE = re.compile(r":(?:py:)?(?P<role>" + "|".join(ROLES) + r"):`(?P<body>[^`]+)`")
_MATH_ROLE = re.compile(r":math:`(?P<tex>[^`]+)`", re.DOTALL)
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<name>[a-z-]+)::[ \t]*(?P<arg>.*)$")
_ADMONITIONS = {"note", "warning", "tip", "important", "caution", "danger", "attention", "hint", "seealso"}


class RestDocstrings(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded (names then resolve)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rest_to_markdown(obj.docstring.value, lambda name, o=obj: _resolve(name, o, loader))


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if isinstance(member, griffe.Alias):
            continue
        yield from _walk(member)


def _resolve(name: str, obj: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The dotted path of the fewstep object ``name`` means in the docstring of ``obj``, or None."""
    name = name.lstrip(".")
    scopes: list[str] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    candidates = [name] + [f"{path}.{name}" for path in scopes]
    for candidate in candidates:
        try:
            found = loader.modules_collection[candidate]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        if isinstance(found, griffe.Alias):  # an import: link to where the object is defined (and rendered)
            try:
                return str(found.final_target.path)
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                pass
        return str(found.path)
    return None


def rest_to_markdown(text: str, resolve) -> str:
    """The Markdown form of the reST docstring ``text``; ``resolve(name)`` gives a role's target path."""
    text = _blocks(text.split("\n"))
    text = _MATH_ROLE.sub(lambda m: _mathml(m["tex"], display=False), text)
    return _ROLE.sub(lambda m: _cross_reference(m["role"], m["body"], resolve), text)


def _mathml(tex: str, display: bool) -> str:
    tex = " ".join(tex.split())
    try:
        out = latex_to_mathml(tex, display="block" if display else "inline")
    except Exception as exc:  # a formula the converter cannot read must fail the build, not vanish
        raise ValueError(f"cannot render the formula {tex!r} as MathML: {exc}") from exc
    return out.replace("\n", " ")


def _cross_reference(role: str, body: str, resolve) -> str:
    explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", body.strip(), re.DOTALL)
    if explicit:
        title, target = " ".join(explicit["title"].split()), explicit["target"].strip()
    else:
        target = body.strip()
        title = target.lstrip("~.")
        if target.startswith("~"):
            title = title.rsplit(".", 1)[-1]
        target = target.lstrip("~")
        if role in ("func", "meth") and not title.endswith(")"):
            title += "()"
    code = f"<code>{html.escape(title)}</code>"
    path = resolve(target)
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_after(lines: list[str], start: int, base: int) -> tuple[list[str], int]:
    """The lines indented deeper than ``base`` from ``start`` on (blank lines inside kept), dedented,
    and the index after them."""
    end, body = start, []
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > base):
        body.append(lines[end])
        end += 1
    while body and not body[-1].strip():
        body.pop()
        end -= 1
    while body and not body[0].strip():
        body.pop(0)
    depth = min((_indent_of(b) for b in body if b.strip()), default=0)
    return [b[depth:] for b in body], end


def _blocks(lines: list[str]) -> str:
    out: list[str] = []
    i = 0
    fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fence = not fence
        if fence:
            out.append(line)
            i += 1
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            pad, name, base = directive["indent"], directive["name"], _indent_of(line)
            body, i = _block_after(lines, i + 1, base)
            if directive["arg"].strip():
                body = [directive["arg"].strip(), *body]
            if name == "math":
                formulas = "\n".join(body).split("\n\n")
                out += ["", *(pad + _mathml(f, display=True) for f in formulas if f.strip()), ""]
            elif name in ("code-block", "code", "sourcecode"):
                lang = directive["arg"].strip()
                out += ["", f"{pad}```{lang}", *(pad + b for b in body[1 if lang else 0:]), f"{pad}```", ""]
            elif name in _ADMONITIONS:
                kind = "note" if name == "seealso" else name
                out += ["", f"{pad}!!! {kind}", *(f"{pad}    {b}" if b else "" for b in body), ""]
            else:
                raise ValueError(f"reST directive '.. {name}::' has no Markdown form here (tools/rest_docstrings.py)")
            continue
        if line.rstrip().endswith("::") and not line.rstrip().endswith(":::"):
            body, end = _block_after(lines, i + 1, _indent_of(line))
            if body:
                pad = " " * _indent_of(line)
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                out += ["", f"{pad}```", *(pad + b if b else "" for b in body), f"{pad}```", ""]
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)
