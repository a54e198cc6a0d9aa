"""Generate job_machine/_sync/ from job_machine/_async/.

The async modules are the only hand-written implementation of the core. This
script writes their sync twins the way psycopg generates its sync classes: it
parses each module with ``ast``, works out the sync twin from the tree, and
formats the result with ``ruff`` (imports sorted, then ``ruff format``), so a
generated file lints like a hand-written one. Differences a rename cannot
express live in job_machine/_acompat.py.

    python tools/async_to_sync.py           # regenerate
    python tools/async_to_sync.py --check   # fail if a generated file is stale (CI)

What changes in the code, found on the tree (never by matching text):

- ``async def``, ``async with``, ``async for`` (comprehensions too) lose
  ``async``; ``await x`` becomes ``x``.
- Every name in ``NAMES`` (a variable, attribute, import, function, class,
  argument or keyword) becomes its sync partner. The table is the one list of
  renames: a new async name (``AsyncProducer``, an ``a``-prefixed helper of
  _acompat.py) must be added to it, and generation fails until it is.
- ``Awaitable[X]`` becomes ``X`` (a sync callable returns the value itself),
  and ``Awaitable`` leaves the imports when nothing else uses it.

The edits are made at the positions the tree gives, in the source text, so
comments, blank lines and the layout of long strings stay as written; the
stdlib unparser would drop the comments, merge implicitly joined strings into
over-long lines and add parentheses that depend on the Python version.

Prose (docstrings and comments) is read by people, so it must be true in the
sync twin too:

- The names of ``NAMES`` are renamed in prose as in code (``:class:`AsyncClient```
  reads ``:class:`Client```), and ``async with``/``async for``/``async def``
  lose ``async``.
- Write the rest so that it is true of both faces: name the face in words
  ("the async worker runs them as asyncio tasks, the sync one in threads"),
  not with a class name that the rename would turn into the other face's.
- A comment line that is true of one face only carries a tag: ``# async: ...``
  is left out of the sync twin, ``# sync: ...`` appears only there (as
  ``# ...``). Generation fails when an ``Async...`` name or ``await`` is left
  in the prose of a generated file.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "job_machine" / "_async"
DST = ROOT / "job_machine" / "_sync"

#: async name -> sync name: the one list of renames, in code and in prose.
NAMES = {
    "AsyncAdmin": "Admin",
    "AsyncClient": "Client",
    "AsyncWorker": "Worker",
    "AsyncTaskWorker": "TaskWorker",
    "ARUNS_COROUTINES": "RUNS_COROUTINES",
    "AsyncStore": "Store",
    "AsyncStoreBase": "StoreBase",
    "AsyncTaskStatements": "TaskStatements",
    "AsyncOutcomeStatements": "OutcomeStatements",
    "AsyncWorkerStatements": "WorkerStatements",
    "AsyncAdminStatements": "AdminStatements",
    "AsyncScheduleStatements": "ScheduleStatements",
    "AsyncHousekeepingStatements": "HousekeepingStatements",
    "AsyncHousekeeper": "Housekeeper",
    "AsyncListener": "Listener",
    "AsyncCompleter": "Completer",
    "AsyncOutcome": "Outcome",
    "AsyncConnector": "Connector",
    "AsyncConnectorOwner": "ConnectorOwner",
    "AsyncLocksAndNotes": "LocksAndNotes",
    "AsyncConnection": "Connection",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncCursor": "Cursor",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "AsyncExitStack": "ExitStack",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "asynccontextmanager": "contextmanager",
    "aclosing": "closing",
    "enter_async_context": "enter_context",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aconnect": "connect",
    "asleep": "sleep",
    "aselect_readable": "select_readable",
    "arun_blocking": "run_blocking",
    "aspawn": "spawn",
    "AHandle": "Handle",
    "AWakeup": "Wakeup",
    "AMutex": "Mutex",
    "AsyncAnswerReader": "AnswerReader",
    "AsyncPinnedConnection": "PinnedConnection",
    "AsyncExecutor": "Executor",
    "AsyncProducer": "Producer",
    "AsyncSideLoop": "SideLoop",
    "AsyncCommands": "Commands",
    "AsyncStopper": "Stopper",
    "AsyncSubscriber": "Subscriber",
    "AsyncOwnPool": "OwnPool",
    "AsyncSlots": "Slots",
    "AsyncSendGroup": "SendGroup",
    "AsyncPartGroup": "PartGroup",
    "ashield": "shield",
    "ajoin_all": "join_all",
    "arun_stoppable": "run_stoppable",
    "ATimer": "Timer",
    "ainstall_schema": "install_schema",
    "ainstall_roles": "install_roles",
}

HEADER = (
    "# DO NOT EDIT: generated from job_machine/_async/{name} by tools/async_to_sync.py.\n"
    "# Change the async source and run `python tools/async_to_sync.py`.\n"
)

_WORDS = re.compile(r"\b(" + "|".join(map(re.escape, NAMES)) + r")\b")
#: A renamed word with the article before it, which may have to change with it.
_ARTICLE_WORD = re.compile(r"\b(?:([Aa]n?)(\s+))?(" + "|".join(map(re.escape, NAMES)) + r")\b")
_ASYNC_KEYWORD = re.compile(r"\basync\s+(?=(?:def|with|for)\b)")
_ASYNC_TAG = re.compile(r"#\s*async:")
_SYNC_TAG = re.compile(r"#\s*sync:\s?")
#: Left in a generated file's prose, these mean the text is still the async face's.
_ASYNC_PROSE = re.compile(r"\bAsync[A-Z]\w*|\bawait\b")
#: A name that looks async: ``AsyncX``, or ``aX``/``AX`` imported from _acompat.
_ASYNC_NAME = re.compile(r"Async[A-Z]")
_ACOMPAT_ASYNC = re.compile(r"a[a-z]|A[A-Z]")


class GenerateError(Exception):
    """The async source holds something the generator cannot turn sync."""


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _rename_words(text: str) -> str:
    """``NAMES`` renamed as whole words ("an AsyncWorker" reads "a Worker")."""

    def rename(m: re.Match[str]) -> str:
        article, blank, word = m.groups()
        new = NAMES[word]
        if article:
            article = article[0] + ("n" if new[0].lower() in "aeiou" else "")
        return f"{article or ''}{blank or ''}{new}"

    return _ARTICLE_WORD.sub(rename, text)


def prose(text: str) -> str:
    """A docstring's or comment's text, as the sync twin says it."""
    return _rename_words(_ASYNC_KEYWORD.sub("", text))


class _Sync(ast.NodeVisitor):
    """Collects the edits that turn one async module's source into its sync twin."""

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.name = name
        # Lines as ast and tokenize count them: split at "\n" alone (str.splitlines
        # would also split at a form feed or U+2028 in a docstring).
        self.lines = io.StringIO(source, newline="\n").readlines()
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.edits: list[_Edit] = []
        self.awaitable_kept = True
        self.docstrings: set[int] = set()

    # -- positions --------------------------------------------------------

    def offset(self, lineno: int, col: int) -> int:
        """The index in the source of a node's (line, UTF-8 byte column)."""
        line = self.lines[lineno - 1]
        return self.starts[lineno - 1] + len(line.encode()[:col].decode())

    def start(self, node: ast.expr | ast.stmt | ast.alias | ast.arg | ast.keyword) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node: ast.expr | ast.stmt | ast.alias | ast.arg | ast.keyword) -> int:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        return self.offset(node.end_lineno, node.end_col_offset)

    def fail(self, at: int, what: str) -> GenerateError:
        line = self.source.count("\n", 0, at) + 1
        return GenerateError(f"job_machine/_async/{self.name}:{line}: {what}")

    def replace(self, start: int, end: int, expected: str, text: str) -> None:
        """Replace source[start:end], which must read ``expected`` (a regex)."""
        if not re.fullmatch(expected, self.source[start:end]):
            found = self.source[start:end][:40]
            raise self.fail(start, f"expected {expected!r} here, found {found!r}")
        self.edits.append(_Edit(start, end, text))

    def rename_at(self, at: int, name: str) -> None:
        if name in NAMES:
            self.replace(at, at + len(name), re.escape(name), NAMES[name])

    def drop_async(self, at: int) -> None:
        """Drop the ``async`` keyword (and the blanks after it) at ``at``."""
        found = re.compile(r"async\s+").match(self.source, at)
        if not found:
            raise self.fail(at, "expected the async keyword here")
        self.replace(at, found.end(), r"async\s+", "")

    def rename_defined(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        keyword = "class" if isinstance(node, ast.ClassDef) else "def"
        found = re.compile(rf"{keyword}\s+").search(self.source, self.start(node))
        assert found is not None
        self.rename_at(found.end(), node.name)

    # -- the tree ---------------------------------------------------------

    def visit_Module(self, node: ast.Module) -> None:
        # Awaitable leaves the imports only when every use of it goes with
        # its Awaitable[X].
        dropped = {
            id(n.value)
            for n in ast.walk(node)
            if isinstance(n, ast.Subscript) and _is_awaitable(n.value)
        }
        self.awaitable_kept = any(_is_awaitable(n) and id(n) not in dropped for n in ast.walk(node))
        self.docstrings = {id(n.value) for n in ast.walk(node) if _is_docstring(n)}
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        # A string names things as code does (a string annotation, a log
        # line); a docstring is prose, where `async with` loses `async` too.
        if isinstance(node.value, str):
            start, end = self.start(node), self.end(node)
            text = self.source[start:end]
            new = prose(text) if id(node) in self.docstrings else _rename_words(text)
            if new != text:
                self.replace(start, end, re.escape(text), new)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # The literal parts of an f-string have no positions of their own
        # before Python 3.12: only the expressions inside are edited.
        for part in node.values:
            if isinstance(part, ast.Constant) and _WORDS.search(str(part.value)):
                raise self.fail(self.start(node), "an async name in an f-string's text")
            if isinstance(part, ast.FormattedValue):
                self.visit(part)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.drop_async(self.start(node))
        self.rename_defined(node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.rename_defined(node)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.rename_defined(node)
        self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> None:
        self.drop_async(self.start(node))
        self.generic_visit(node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self.drop_async(self.start(node))
        self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> None:
        at = self.start(node)
        found = re.compile(r"await\s+").match(self.source, at)
        if not found:
            raise self.fail(at, "expected the await keyword here")
        self.replace(at, found.end(), r"await\s+", "")
        self.generic_visit(node)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        # A comprehension clause has no position of its own: its `async` is
        # the last one before the clause's target.
        for gen in node.generators:
            if gen.is_async:
                target = self.start(gen.target)
                before = self.source.rfind("async", self.start(node), target)
                if before < 0 or not re.fullmatch(r"async\s+for\s+", self.source[before:target]):
                    raise self.fail(target, "expected `async for` before this target")
                self.drop_async(before)
        self.generic_visit(node)

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_GeneratorExp = _comprehension

    def visit_DictComp(self, node: ast.DictComp) -> None:
        if any(gen.is_async for gen in node.generators):
            raise self.fail(self.start(node), "an async dict comprehension: not supported")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self.rename_at(self.start(node), node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in NAMES:
            end = self.end(node)
            self.replace(end - len(node.attr), end, re.escape(node.attr), NAMES[node.attr])
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self.rename_at(self.start(node), node.arg)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None:
            self.rename_at(self.start(node), node.arg)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_awaitable(node.value):
            # Awaitable[X] -> X: drop "Awaitable[" and the closing "]".
            start, inner, inner_end, end = (
                self.start(node),
                self.start(node.slice),
                self.end(node.slice),
                self.end(node),
            )
            self.replace(start, inner, r"Awaitable\[\s*", "")
            self.replace(inner_end, end, r",?\s*\]", "")
            self.visit(node.slice)
            return
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        kept = [a for a in node.names if a.name != "Awaitable" or self.awaitable_kept]
        if not kept:
            raise self.fail(self.start(node), "an import of Awaitable alone: not supported")
        for alias in node.names:
            at = self.start(alias)
            if alias in kept:
                self.rename_at(at, alias.name)
                continue
            # Drop the name and the comma that joins it to the next (or last) one.
            after = re.compile(r"\s*,\s*").match(self.source, self.end(alias))
            if after:
                self.replace(at, after.end(), r"Awaitable\s*,\s*", "")
            else:
                before = self.source.rindex(",", self.start(node), at)
                self.replace(before, self.end(alias), r",\s*Awaitable", "")


def _is_awaitable(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "Awaitable"


def _is_docstring(node: ast.AST) -> TypeGuard[ast.Expr]:
    """A string standing as a statement: a docstring (of a module, class,
    function or attribute)."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _comment_edits(source: str, edits: _Sync) -> None:
    """Edits of the comments: renames, and the async:/sync: tags."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        start = edits.offset(tok.start[0], len(tok.line[: tok.start[1]].encode()))
        end = start + len(tok.string)
        alone = not tok.line[: tok.start[1]].strip()
        if _ASYNC_TAG.match(tok.string):
            if alone:  # the whole line goes, with its indent and line break
                start = edits.starts[tok.start[0] - 1]
                end = edits.starts[tok.start[0]]
            else:  # the comment goes, with the blanks before it
                start -= len(tok.line[: tok.start[1]]) - len(tok.line[: tok.start[1]].rstrip())
            edits.replace(start, end, r"[\s\S]*", "")
        elif tagged := _SYNC_TAG.match(tok.string):
            edits.replace(start, end, r"[\s\S]*", "# " + prose(tok.string[tagged.end() :]))
        elif prose(tok.string) != tok.string:
            edits.replace(start, end, re.escape(tok.string), prose(tok.string))


def _apply(source: str, edits: list[_Edit], name: str) -> str:
    out, at = [], 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.start < at:
            raise GenerateError(f"job_machine/_async/{name}: overlapping edits at {edit.start}")
        out += [source[at : edit.start], edit.text]
        at = edit.end
    out.append(source[at:])
    return "".join(out)


def _check_sync(text: str, name: str) -> None:
    """Fail on what is still async in the twin: a name missing from NAMES, prose."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef | ast.AsyncWith | ast.AsyncFor | ast.Await):
            raise GenerateError(f"_sync/{name}:{node.lineno}: async code left")
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
        for n in names:
            acompat = isinstance(node, ast.ImportFrom) and node.module == "_acompat"
            if _ASYNC_NAME.match(n) or n in NAMES or (acompat and _ACOMPAT_ASYNC.match(n)):
                raise GenerateError(
                    f"_sync/{name}:{getattr(node, 'lineno', '?')}: {n!r} is async: "
                    "add it and its sync partner to NAMES in tools/async_to_sync.py"
                )
    docstrings = {(n.lineno, n.col_offset) for n in ast.walk(tree) if _is_docstring(n)}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        is_prose = tok.type == tokenize.COMMENT or (
            tok.type == tokenize.STRING and tok.start in docstrings
        )
        if is_prose and (found := _ASYNC_PROSE.search(tok.string)):
            raise GenerateError(
                f"_sync/{name}:{tok.start[0]}: {found.group()!r} in prose: make the "
                "text true of both faces, or tag an async-only comment `# async:`"
            )


def _ruff(args: list[str], text: str, path: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if run.returncode != 0:
        raise GenerateError(f"ruff {args[0]} failed on {path.name}:\n{run.stderr}")
    return run.stdout


def to_sync(source: str, name: str, format_: bool = True) -> str:
    """The sync twin of one async module's source (``name``: its file name)."""
    tree = ast.parse(source)
    edits = _Sync(source, name)
    edits.visit(tree)
    _comment_edits(source, edits)
    text = HEADER.format(name=name) + _apply(source, edits.edits, name)
    _check_sync(text, name)
    if format_:
        path = DST / name
        text = _ruff(["check", "--fix-only", "--select", "I001", "--quiet"], text, path)
        text = _ruff(["format", "--quiet"], text, path)
    return text


def expected() -> dict[Path, str]:
    """Every generated file and the text it must have."""
    out = {}
    for src in sorted(SRC.glob("*.py")):
        out[DST / src.name] = to_sync(src.read_text("utf-8"), src.name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = ap.parse_args()
    try:
        wanted = expected()
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text("utf-8") != text]
    extra = [p for p in DST.glob("*.py") if p not in wanted]
    if args.check:
        for p in stale + extra:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        if stale or extra:
            print("run: python tools/async_to_sync.py", file=sys.stderr)
            return 1
        return 0
    DST.mkdir(exist_ok=True)
    for p in stale:
        p.write_text(wanted[p], "utf-8")
        print(f"wrote {p.relative_to(ROOT)}")
    for p in extra:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
