"""Cache keys: a constructive trace of what produced a step's outputs.

``key(step) = H(format version, step name, normalized code, outputs, params, version,
[(name, digest) of every input and external value])``. Inputs produced by a step contribute the
**content digest of that output**, not the producer's key, so an edit that yields identical output
leaves downstream keys unchanged (early cutoff). External values (globals, helpers, modules) are
fingerprinted recursively: a helper's edit changes the key of every step that calls it.

Must never import IPython or widget code.
"""

from __future__ import annotations

import ast
import builtins
import dis
import importlib.metadata
import inspect
import sys
import textwrap
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import xxhash

from .hashing import digest_parts
from .statements import Stmt

FORMAT_VERSION = "nbflow-key-1"

_BUILTIN_NAMES = frozenset(dir(builtins))


# -- code normalization ---------------------------------------------------------------------------
# node class -> its fields, each with whether it is optional (an absent value reads as None)
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def dump(node: ast.AST) -> str:
    """The text of a tree, without positions: what a key covers of a statement.

    It is the text of Python 3.11's ``ast.dump(node, annotate_fields=False)``, written out here
    for two reasons. The key must not change with the interpreter's formatting (3.13's
    ``ast.dump`` leaves out empty lists and None), only with the tree. And an edited cell dumps
    its changed statements on every run: this walk is quicker than the general one, which also
    serves pretty-printing and attributes.

    A field after one left out (an optional field holding None) is written ``name=value``."""
    cls = type(node)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = tuple((f, getattr(cls, f, ...) is None) for f in cls._fields)
    args = []
    named = False
    for name, optional in fields:
        value = getattr(node, name, _ABSENT)
        if value is None and optional or value is _ABSENT:
            named = True
            continue
        text = dump(value) if isinstance(value, ast.AST) else _other(value)
        args.append(name + "=" + text if named else text)
    return cls.__name__ + "(" + ", ".join(args) + ")"


_ABSENT = object()


def _other(value: Any) -> str:
    """A value that is not a node: a list of nodes (or of None, a dict's ``**`` key), a
    constant, a name."""
    if type(value) is list:
        return "[" + ", ".join([dump(v) if isinstance(v, ast.AST) else _other(v)
                                for v in value]) + "]"
    return repr(value)


def _dump(nodes: Iterable[ast.AST]) -> str:
    return "\n".join(dump(n) for n in nodes)


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:]
    return body


def _returns_exactly(stmt: ast.stmt, outputs: tuple[str, ...]) -> bool:
    """True for a final ``return a`` / ``return a, b`` that returns the outputs by name."""
    if not isinstance(stmt, ast.Return) or stmt.value is None:
        return False
    v = stmt.value
    names = v.elts if isinstance(v, ast.Tuple) else [v]
    return len(names) == len(outputs) and all(
        isinstance(n, ast.Name) and n.id == o for n, o in zip(names, outputs, strict=True)
    )


def normalize_body(body: list[ast.stmt], outputs: tuple[str, ...]) -> str:
    """Canonical text of a step body: formatting, comments and the docstring do not count.

    A trailing ``return <outputs>`` is dropped, so a cell (outputs are the names it binds) and the
    exported function that returns those names normalize to the same text and share cache keys.
    """
    body = _strip_docstring(list(body))
    if body and _returns_exactly(body[-1], outputs):
        body = body[:-1]
    return _dump(body)


_stmt_dumps: dict[tuple[str, int, int], str] = {}


def normalize_cell(stmts: Sequence[Stmt]) -> str:
    """:func:`normalize_body` of a cell (no outputs) from its statements, memoized per
    statement: an edit re-dumps only the statements it touched."""
    body = list(stmts)
    if body and _strip_docstring([body[0].node]) == []:
        body = body[1:]
    parts = []
    for stmt in body:
        text = _stmt_dumps.get(stmt.memo)
        if text is None:
            if len(_stmt_dumps) > 8192:
                _stmt_dumps.clear()
            text = _stmt_dumps[stmt.memo] = dump(stmt.node)
        parts.append(text)
    return "\n".join(parts)


def normalize_source(source: str, outputs: tuple[str, ...] = ()) -> str:
    """Normalize module-level code (a cell)."""
    return normalize_body(ast.parse(source).body, outputs)


# by identity, not equality: equal code objects can come from different source text (constant
# folding), and the key must depend on the text so that it is the same in every process
_code_cache: dict[int, tuple[weakref.ref[types.CodeType], str, tuple[str, ...]]] = {}


def _function_def(func: Callable[..., Any]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == func.__name__:
            return node
    return None


def _bytecode_digest(code: types.CodeType) -> str:
    """Fallback when no source exists: bytecode, constants and names (recursively)."""
    parts: list[bytes | str] = [code.co_code, repr(code.co_names), repr(code.co_varnames)]
    for const in code.co_consts:
        parts.append(_bytecode_digest(const) if isinstance(const, types.CodeType) else repr(const))
    return digest_parts(parts)


def function_code(func: Callable[..., Any], outputs: tuple[str, ...] = ()) -> str:
    """Normalized code of a function's body (decorators, name, docstring, comments excluded)."""
    code = getattr(func, "__code__", None)
    if code is not None:
        hit = _code_cache.get(id(code))
        if hit is not None and hit[0]() is code and hit[2] == outputs:
            return hit[1]
    node = _function_def(func)
    if node is not None:
        # the signature is not part of the text: input names and default values enter the key
        # through the name -> digest map, which a cell with the same body also produces
        text = normalize_body(node.body, outputs)
    elif code is not None:
        text = "bytecode:" + _bytecode_digest(code)
    else:
        text = "object:" + getattr(func, "__qualname__", repr(type(func)))
    if code is not None:
        _code_cache[id(code)] = (weakref.ref(code), text, outputs)
    return text


# -- external values ------------------------------------------------------------------------------
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"})
_globals_cache: dict[types.CodeType, tuple[str, ...]] = {}


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names a code object really reads or writes as globals (recursively into nested code),
    sorted: fingerprints are built in this order, so it must not depend on the hash seed.

    Not ``co_names``: it also holds attribute names and imported module names, so ``df.plot()``
    would fingerprint an unrelated global ``plot`` and keys would depend on whatever the
    surrounding namespace (a notebook's, a script's) happens to hold.
    """
    hit = _globals_cache.get(code)
    if hit is not None:
        return hit
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    result = tuple(sorted(names))
    _globals_cache[code] = result
    return result


def module_version(module: types.ModuleType) -> str:
    """A module's name and the version of the distribution it comes from (or Python's)."""
    name = module.__name__
    top = name.partition(".")[0]
    version = getattr(sys.modules.get(top), "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            version = None
    if version is None:
        if top in sys.stdlib_module_names:
            version = "python-" + ".".join(map(str, sys.version_info[:2]))
        else:
            file = getattr(module, "__file__", None)
            version = "file:" + (file or "?")
    return f"module:{name}=={version}"


class Fingerprinter:
    """Fingerprints the external values a step reads: modules, functions (recursively), values.

    ``value_digest`` is the content digest function of the store's codec, so an external value and
    a stored output with the same content contribute the same digest. Names that cannot be
    fingerprinted are collected in ``unknown`` for one warning per step.
    """

    def __init__(self, value_digest: Callable[[Any], str]) -> None:
        self.value_digest = value_digest
        self.unknown: list[str] = []

    def external(self, name: str, value: Any, _seen: set[int] | None = None) -> str | None:
        seen = _seen if _seen is not None else set()
        if isinstance(value, types.ModuleType):
            return digest_parts([module_version(value)])
        if isinstance(value, types.FunctionType):
            if id(value) in seen:
                return digest_parts(["recursive", value.__qualname__])
            seen.add(id(value))
            return digest_parts(["function", function_code(value), *self.function_externals(value, seen)])
        if isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            mod = getattr(value, "__module__", None) or ""
            return digest_parts(["builtin", mod, value.__qualname__])
        if isinstance(value, type):
            return self._class(value, seen)
        try:
            return self.value_digest(value)
        except Exception:
            self.unknown.append(name)
            return None

    def _class(self, cls: type, seen: set[int]) -> str:
        mod = sys.modules.get(cls.__module__)
        if mod is not None and cls.__module__ not in ("__main__",) and getattr(mod, "__file__", None):
            if not cls.__module__.startswith("__"):
                return digest_parts(["class", cls.__qualname__, module_version(mod)])
        # the user's own class (a notebook cell, a script's __main__): built from its members,
        # not inspect.getsource, which cannot find a class defined in a notebook cell -- so an
        # edited method changes the fingerprint there too, and the notebook and its exported
        # script agree
        parts = ["class", cls.__qualname__, *(b.__qualname__ for b in cls.__bases__)]
        for name, attr in sorted(vars(cls).items()):
            funcs = _member_functions(attr)
            if funcs is not None:
                for f in funcs:
                    if id(f) not in seen:
                        seen.add(id(f))
                        parts += [name, function_code(f), *self.function_externals(f, seen)]
            elif isinstance(attr, type) and id(attr) not in seen:
                seen.add(id(attr))
                parts += [name, self.external(name, attr, seen) or ""]
            elif not (name.startswith("__") and name.endswith("__")):
                try:
                    parts += [name, self.value_digest(attr)]
                except Exception:
                    parts += [name, type(attr).__qualname__]
        return digest_parts(parts)

    def function_externals(self, func: types.FunctionType, seen: set[int]) -> list[str]:
        """Fingerprints of the globals and closure cells ``func`` reads, sorted by name."""
        parts: list[str] = []
        g = func.__globals__
        for name in _global_names(func.__code__):
            if name in g:
                fp = self.external(name, g[name], seen)
                if fp is not None:
                    parts.append(f"{name}={fp}")
            # names that are attributes (co_names holds them too) or builtins: not ours to hash
        if func.__closure__:
            for name, cell in zip(func.__code__.co_freevars, func.__closure__, strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
                fp = self.external(name, value, seen)
                if fp is not None:
                    parts.append(f"{name}={fp}")
        return parts

    def namespace(self, names: Iterable[str], ns: Mapping[str, Any]) -> dict[str, str]:
        """Fingerprints of ``names`` looked up in ``ns`` (a cell's globals); absent names skipped."""
        out: dict[str, str] = {}
        for name in sorted(names):
            if name in ns:
                fp = self.external(name, ns[name])
                if fp is not None:
                    out[name] = fp
            elif name not in _BUILTIN_NAMES:
                continue
        return out


def _member_functions(attr: Any) -> list[types.FunctionType] | None:
    """The functions behind a class member (method, static/class method, property), or None."""
    if isinstance(attr, staticmethod | classmethod):
        attr = attr.__func__
    if isinstance(attr, types.FunctionType):
        return [attr]
    if isinstance(attr, property):
        return [f for f in (attr.fget, attr.fset, attr.fdel) if isinstance(f, types.FunctionType)]
    return None


def reads_outside(func: Any) -> bool:
    """Whether a step function can have external values: it loads a global or has a closure
    (anything that is not a plain function is assumed to)."""
    if not isinstance(func, types.FunctionType):
        return True
    return bool(func.__closure__) or bool(_global_names(func.__code__))


def function_externals(
    func: types.FunctionType, value_digest: Callable[[Any], str]
) -> tuple[dict[str, str], list[str]]:
    """External fingerprints of a function step as a name -> digest map, plus unknown names."""
    if not reads_outside(func):
        return {}, []  # reads nothing from outside
    fp = Fingerprinter(value_digest)
    parts = fp.function_externals(func, {id(func)})
    out = dict(p.split("=", 1) for p in parts)
    return out, fp.unknown


# -- package versions (for records) ---------------------------------------------------------------
_package_versions: dict[str, str | None] = {}


def package_version(module_name: str) -> str | None:
    """Version of the installed package a module belongs to; None for the standard library
    and for the user's own modules (whose code is fingerprinted instead)."""
    top = module_name.partition(".")[0]
    if top in _package_versions:
        return _package_versions[top]
    version: str | None = None
    if top not in sys.stdlib_module_names and top not in ("builtins", "__main__"):
        version = getattr(sys.modules.get(top), "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(top)
            except (importlib.metadata.PackageNotFoundError, ValueError):
                version = None
    _package_versions[top] = None if version is None else str(version)
    return _package_versions[top]


def packages_of(funcs: Iterable[Any]) -> dict[str, str]:
    """``{package: version}`` for the packages ``funcs`` read: modules, and classes or functions
    imported from packages; the user's own helper functions are followed recursively."""
    found: dict[str, str] = {}
    seen: set[int] = set()

    def visit(value: Any) -> None:
        if isinstance(value, types.ModuleType):
            note(value.__name__)
        elif isinstance(value, types.FunctionType):
            if id(value) in seen:
                return
            seen.add(id(value))
            if note(value.__module__ or ""):
                return  # a package's function: its version says it all
            for name in _global_names(value.__code__):
                if name in value.__globals__:
                    visit(value.__globals__[name])
            for cell in value.__closure__ or ():
                try:
                    visit(cell.cell_contents)
                except ValueError:
                    continue
        elif isinstance(value, type) or callable(value):
            note(getattr(value, "__module__", None) or "")

    def note(module_name: str) -> bool:
        version = package_version(module_name) if module_name else None
        if version is None:
            return False
        found[module_name.partition(".")[0]] = version
        return True

    for f in funcs:
        visit(f)
    return dict(sorted(found.items()))


# -- the key ---------------------------------------------------------------------------------------
def step_key(
    name: str,
    code: str,
    outputs: tuple[str, ...],
    params: Mapping[str, str],
    input_digests: Mapping[str, str],
    version: str | None = None,
) -> str:
    """The cache key of one step run. ``params`` and ``input_digests`` map names to digests.

    Inputs, parameters and external values are merged into one sorted name -> digest map: a name
    read as a notebook global and the same name read as a flow parameter with the same content give
    the same key (this is what lets an exported script share the notebook's cache).
    """
    merged = {**params, **input_digests} if params else input_digests
    # one repr of a tuple of strings is unambiguous, and hashing it once is the fast path; the
    # (long) normalized code enters through its memoized digest
    text = repr((FORMAT_VERSION, name, code_digest(code), outputs, version or "",
                 sorted(merged.items())))
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))


_code_digests: dict[str, str] = {}


def code_digest(code: str) -> str:
    """Digest of normalized code, memoized by text (a step's code is hashed on every run)."""
    d = _code_digests.get(code)
    if d is None:
        if len(_code_digests) > 20_000:
            _code_digests.clear()
        d = _code_digests[code] = xxhash.xxh3_128_hexdigest(code.encode("utf-8", "surrogatepass"))
    return d
