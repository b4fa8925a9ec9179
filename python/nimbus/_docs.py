"""Signatures and docstrings of the Python functions from the library's declaration of
improve-cloud-mask: the keywords, defaults, ranges and help are the CLI's, one declaration
for both front ends."""
import inspect
import textwrap

from ._nimbus import operation_parameters

_PYTHON_TYPES = {"path": "str or os.PathLike", "string": "str", "list of strings": "list of str"}

_DECLARED = {p["name"]: p for p in operation_parameters("improve-cloud-mask")}


def _accepted(p):
    """The values a declared parameter takes, as text ('' = any of its type)."""
    if "choices" in p:
        return "one of " + ", ".join(repr(c) for c in p["choices"])
    if "min" in p and "max" in p:
        return f"in [{p['min']:g}, {p['max']:g}]"
    if "min" in p:
        return f">= {p['min']:g}"
    if "max" in p:
        return f"<= {p['max']:g}"
    return ""


def declared_entry(name):
    """The numpydoc entry of a declared parameter: name, type, default, range, help."""
    p = _DECLARED[name]
    head = [_PYTHON_TYPES.get(p["type"], p["type"])]
    if p["required"]:
        head.append("required")
    elif p["default"] is None:
        head.append("optional")
    else:
        head.append(f"default {p['default']!r}")
    if _accepted(p):
        head.append(_accepted(p))
    return f"{name} : {', '.join(head)}\n" + _wrap(p["help"] + ".")


def _wrap(text):
    return textwrap.fill(text, width=92, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False)


def document(function, summary, parameters=(), returns="", raises="", example="", options=False,
             exclude=("s2_raster", "product_mask", "out")):
    """Gives ``function`` its docstring and, with ``options``, a signature whose ``**options``
    are the declared parameters of improve-cloud-mask (keyword-only, with their defaults).

    ``parameters``: (name, numpydoc entry) of the function's own parameters; an entry of None
    takes the declaration's. ``exclude``: declared parameters that are not options here."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    declared = []
    if options:
        names = {p.name for p in own}
        declared = [n for n in _DECLARED if n not in names and n not in exclude]
        function.__signature__ = signature.replace(parameters=own + [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_DECLARED[n]["default"]) for n in declared])
    entries = [entry if entry is not None else declared_entry(name) for name, entry in parameters]
    entries += [declared_entry(n) for n in declared]
    sections = [inspect.cleandoc(summary)]
    if entries:
        sections.append("Parameters\n----------\n" + "\n".join(entries))
    # Returns and Raises are written as they appear (type line, indented text); examples dedented.
    for title, text in (("Returns", returns), ("Raises", raises), ("Example", textwrap.dedent(example).strip())):
        if text:
            sections.append(f"{title}\n{'-' * len(title)}\n{text}")
    function.__doc__ = "\n\n".join(sections)
    function.__module__ = "nimbus"
    return function


def input_error(cases=""):
    """The Raises entry of nimbus.InputError, with the function's own ``cases``."""
    return "InputError\n" + _wrap("Bad input, with a message naming the parameter and the fix (a ``ValueError``)"
                                  + (f": {' '.join(cases.split())}" if cases else "."))
