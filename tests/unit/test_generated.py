"""The sync twin is generated from the async source and kept up to date."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASYNC = ROOT / "job_machine" / "_async"
SYNC = ROOT / "job_machine" / "_sync"
HEADER_LINES = 2


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("async_to_sync", ROOT / "tools/async_to_sync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _tool()


def _twins() -> list[tuple[Path, Path]]:
    pairs = [(src, SYNC / src.name) for src in sorted(ASYNC.glob("*.py"))]
    assert len(pairs) > 5
    return pairs


def _comments(text: str) -> list[str]:
    toks = tokenize.generate_tokens(io.StringIO(text).readline)
    return [t.string for t in toks if t.type == tokenize.COMMENT]


def _is_docstring(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _docstrings(text: str) -> list[str]:
    return [n.value.value for n in ast.walk(ast.parse(text)) if _is_docstring(n)]


def test_sync_modules_are_up_to_date() -> None:
    run = subprocess.run(
        [sys.executable, "tools/async_to_sync.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_sync_twin_has_no_async_left() -> None:
    for path in SYNC.glob("*.py"):
        text = path.read_text()
        assert "await " not in text, path
        assert "async def" not in text, path
        assert "Async" not in text, path


def test_generated_prose_says_nothing_only_true_of_the_async_face() -> None:
    for _, path in _twins():
        text = path.read_text()
        prose = _comments(text) + _docstrings(text)
        for passage in prose:
            assert not re.search(r"\bAsync|\bawait\b|hand-written source", passage), passage
            for sync_name in gen.NAMES.values():  # "An AsyncWorker" is "A Worker"
                if sync_name[0].lower() not in "aeiou":
                    assert not re.search(rf"\b[Aa]n\s+{sync_name}\b", passage), passage
            # asyncio is named only beside the sync face it is contrasted with.
            for sentence in re.split(r"(?<=[.;])\s", passage):
                if "asyncio" in sentence:
                    assert re.search(r"\bsync\b|thread", sentence), sentence


def test_the_tricky_passages_read_true_in_the_sync_twin() -> None:
    worker = (SYNC / "worker.py").read_text()
    assert "An Worker" not in worker
    assert "the sync one in threads" in worker
    init = (SYNC / "__init__.py").read_text()
    assert "job_machine/_sync/ is generated from it" in init


def test_each_renamed_name_is_renamed_everywhere() -> None:
    for src, dst in _twins():
        source, twin = src.read_text(), dst.read_text()
        for name, sync_name in gen.NAMES.items():
            word = re.compile(rf"\b{re.escape(name)}\b")
            assert not word.search(twin), (dst.name, name)
            used = len(word.findall(source))
            assert len(re.findall(rf"\b{re.escape(sync_name)}\b", twin)) >= used, (dst.name, name)


def test_comments_and_docstrings_survive() -> None:
    for src, dst in _twins():
        source, twin = src.read_text(), dst.read_text()
        assert _comments(twin)[HEADER_LINES:] == [
            gen.prose(c) for c in _comments(source) if not c.startswith("# async:")
        ], dst.name
        assert _docstrings(twin) == [gen.prose(d) for d in _docstrings(source)], dst.name


class _Reference(ast.NodeTransformer):
    """The sync twin by the book, on the tree alone: the generator's output
    must parse to the same tree (docstrings and import order aside)."""

    def _as(self, node: ast.AST, cls: type[ast.AST]) -> ast.AST:
        return self.generic_visit(cls(**{f: getattr(node, f) for f in node._fields}))

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        node.name = gen.NAMES.get(node.name, node.name)
        return self._as(node, ast.FunctionDef)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        return self._as(node, ast.With)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        return self._as(node, ast.For)

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        node.is_async = 0
        return self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "Awaitable":
            return self.visit(node.slice)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = gen.NAMES.get(node.id, node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        node.attr = gen.NAMES.get(node.attr, node.attr)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = gen.NAMES.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = gen.NAMES.get(node.name, node.name)
        return self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> ast.AST:
        node.name = gen.NAMES.get(node.name, node.name)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = gen.NAMES.get(node.arg, node.arg)
        return self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        node.arg = gen.NAMES.get(node.arg, node.arg) if node.arg else None
        return self.generic_visit(node)


def _code(tree: ast.AST) -> str:
    """The tree without docstrings, with each import's names sorted."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            node.body = [s for s in body if not _is_docstring(s)] or [ast.Pass()]
        if isinstance(node, ast.ImportFrom):
            node.names = [a for a in node.names if a.name != "Awaitable"]
            node.names.sort(key=lambda a: a.name)
    return ast.dump(tree)


def test_the_generated_code_is_the_async_code_without_async() -> None:
    for src, dst in _twins():
        expected = _Reference().visit(ast.parse(src.read_text()))
        assert _code(ast.parse(dst.read_text())) == _code(expected), dst.name


SOURCE = '''\
"""AsyncThing: ``async with`` it, like an AsyncClient."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager

from .._acompat import AMutex, asleep
from .connection import AsyncConnector


class AsyncThing(AsyncConnector):
    """An AsyncThing; see :meth:`AsyncClient.wait`."""

    # async: Awaited on the event loop, which runs on meanwhile.
    # sync: Blocks the calling thread.
    async def __aenter__(self) -> AsyncThing:
        await asleep(1)  # async: lets the loop run
        async with aclosing(self.gen()) as g:
            async for x in g:
                print(x)
        xs = [n async for n in self.gen()]
        log("AsyncThing %s", f"{await self.f(AsyncConnector)} done", xs)
        return self

    @asynccontextmanager
    async def gen(self, pause: Callable[[float], Awaitable[None]] = asleep) -> AsyncIterator[int]:
        yield await self.one()
        self.mutex = AMutex(aconnect=1)  # AMutex: one holder at a time
'''

EXPECTED = '''\
"""Thing: ``with`` it, like a Client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

from .._acompat import Mutex, sleep
from .connection import Connector


class Thing(Connector):
    """A Thing; see :meth:`Client.wait`."""

    # Blocks the calling thread.
    def __enter__(self) -> Thing:
        sleep(1)
        with closing(self.gen()) as g:
            for x in g:
                print(x)
        xs = [n for n in self.gen()]
        log("Thing %s", f"{self.f(Connector)} done", xs)
        return self

    @contextmanager
    def gen(self, pause: Callable[[float], None] = sleep) -> Iterator[int]:
        yield self.one()
        self.mutex = Mutex(connect=1)  # Mutex: one holder at a time
'''


@pytest.fixture
def thing_in_names(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {**gen.NAMES, "AsyncThing": "Thing"}
    words = "|".join(map(re.escape, names))
    monkeypatch.setattr(gen, "NAMES", names)
    monkeypatch.setattr(gen, "_WORDS", re.compile(rf"\b({words})\b"))
    monkeypatch.setattr(gen, "_ARTICLE_WORD", re.compile(rf"\b(?:([Aa]n?)(\s+))?({words})\b"))


@pytest.mark.usefixtures("thing_in_names")
def test_the_transformation_on_a_sample() -> None:
    out = gen.to_sync(SOURCE, "thing.py")
    assert out == gen.HEADER.format(name="thing.py") + EXPECTED


@pytest.mark.usefixtures("thing_in_names")
def test_awaitable_stays_imported_while_something_else_uses_it() -> None:
    source = (
        "from collections.abc import Awaitable, Callable\n"
        "x: Callable[[], Awaitable[int]]\n"
        "y: Awaitable[int] | Awaitable\n"
    )
    out = gen.to_sync(source, "x.py", format_=False)
    assert out.endswith(
        "from collections.abc import Awaitable, Callable\n"
        "x: Callable[[], int]\n"
        "y: int | Awaitable\n"
    )


def test_an_async_name_missing_from_names_fails_generation() -> None:
    with pytest.raises(gen.GenerateError, match="'AsyncConsumer' is async: add it"):
        gen.to_sync("class AsyncConsumer:\n    pass\n", "consumer.py", format_=False)
    with pytest.raises(gen.GenerateError, match="'agather' is async: add it"):
        gen.to_sync("from .._acompat import agather\n", "x.py", format_=False)


def test_async_only_prose_fails_generation_unless_tagged() -> None:
    with pytest.raises(gen.GenerateError, match="'await' in prose"):
        gen.to_sync("x = 1  # await it\n", "x.py", format_=False)
    out = gen.to_sync("x = 1  # async: await it\n# sync: call it\n", "x.py", format_=False)
    assert out.endswith("x = 1\n# call it\n")


def test_positions_hold_after_non_ascii_text_and_odd_line_breaks() -> None:
    # Columns in the tree count UTF-8 bytes; a docstring may hold a U+2028.
    source = '"""Café\u2028 — AsyncClient."""\n\nx = ("é…", AsyncClient, "—")  # → AsyncClient\n'
    out = gen.to_sync(source, "x.py", format_=False)
    assert out.endswith('"""Café\u2028 — Client."""\n\nx = ("é…", Client, "—")  # → Client\n')


# -- the public faces --------------------------------------------------------------------

#: Dunder methods of one face and their partners on the other.
_FACE_DUNDERS = {"__aenter__": "__enter__", "__aexit__": "__exit__"}


def _public_pairs() -> list[tuple[type, type]]:
    """(sync, async) for every public class of job_machine/_async/."""
    import job_machine as jm  # noqa: PLC0415

    pairs = []
    for name in jm.__all__:
        found = getattr(jm, name)
        if isinstance(found, type) and found.__module__.startswith("job_machine._async."):
            pairs.append((getattr(jm, name.removeprefix("Async")), found))
    return pairs


def _members(cls: type, dunders: dict[str, str]) -> dict[str, object]:
    """The public attributes of ``cls``, inherited ones too, and its
    context-manager methods under their sync names."""
    found = {n: inspect.getattr_static(cls, n) for n in dir(cls) if not n.startswith("_")}
    for own, shared in dunders.items():
        if hasattr(cls, own):
            found[shared] = inspect.getattr_static(cls, own)
    return found


def _face_differences(sync: type, asyn: type) -> list[str]:
    """How a sync class and its async twin differ in what a user calls:
    names, parameters (names, kinds, defaults), and which are coroutines
    (every method that is a coroutine function on the async face is a plain
    function on the sync one, and nothing else is a coroutine)."""
    differences = []
    ours, theirs = _members(sync, {}), _members(asyn, _FACE_DUNDERS)
    ours |= {
        d: inspect.getattr_static(sync, d) for d in ("__enter__", "__exit__") if hasattr(sync, d)
    }
    for name in sorted(ours.keys() ^ theirs.keys()):
        differences.append(f"{name}: only on {'the sync' if name in ours else 'the async'} face")
    for name in sorted(ours.keys() & theirs.keys()):
        s, a = ours[name], theirs[name]
        s_call = s.__func__ if isinstance(s, staticmethod | classmethod) else s
        a_call = a.__func__ if isinstance(a, staticmethod | classmethod) else a
        if isinstance(s, property) != isinstance(a, property):
            differences.append(f"{name}: a property on one face only")
        if not (callable(s_call) and callable(a_call)) or isinstance(s_call, type):
            continue
        if inspect.iscoroutinefunction(s_call):
            differences.append(f"{name}: a coroutine function on the sync face")
        if inspect.isasyncgenfunction(a_call) != inspect.isgeneratorfunction(s_call):
            differences.append(f"{name}: a generator on one face only")
        s_params = [
            (p.name, p.kind, p.default) for p in inspect.signature(s_call).parameters.values()
        ]
        a_params = [
            (p.name, p.kind, p.default) for p in inspect.signature(a_call).parameters.values()
        ]
        if s_params != a_params:
            differences.append(f"{name}: parameters {s_params} != {a_params}")
    return differences


def test_every_public_async_class_has_a_sync_twin_admin_too() -> None:
    names = {asyn.__name__ for _, asyn in _public_pairs()}
    assert {"AsyncAdmin", "AsyncClient", "AsyncWorker", "AsyncTaskWorker"} <= names


@pytest.mark.parametrize("sync, asyn", _public_pairs(), ids=lambda c: c.__name__)
def test_public_sync_and_async_classes_have_the_same_methods(sync: type, asyn: type) -> None:
    assert _face_differences(sync, asyn) == []
    # Not empty by construction: the async face has coroutine methods.
    assert any(inspect.iscoroutinefunction(m) for m in vars(asyn).values())


def test_the_face_comparison_sees_a_difference() -> None:
    """The comparison above can fail: a method missing, a parameter renamed,
    a coroutine left on the sync face are all reported."""

    class AsyncFace:
        async def read(self, task_id: int, *, limit: int = 10) -> None: ...

        async def close(self) -> None: ...

        async def __aenter__(self) -> AsyncFace:
            return self

    class Face:
        def read(self, task: int, *, limit: int = 10) -> None: ...

        async def stop(self) -> None: ...

    found = _face_differences(Face, AsyncFace)
    assert any(d.startswith("close: only on the async") for d in found)
    assert any(d.startswith("stop: only on the sync") for d in found)
    assert any(d.startswith("__enter__: only on the async") for d in found)
    assert any(d.startswith("read: parameters") for d in found)
