"""Who owns what (issue 9), checked on the source: these rules hold for every future change too."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

from service import sealed

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
MAX_MODULE_LINES = 400
# Modules allowed over MAX_MODULE_LINES: path -> (their ceiling, why). An entry that is no longer
# needed fails too, so the list only shrinks.
LONG_MODULES: dict[str, tuple[int, str]] = {
    "service/queue.py": (
        480,
        "every statement on the queue's two tables (jobs, job_queue) side by side, so that the lock order"
        " (queue row, then job row) and the two rows' agreement can be read in one place (issue 14;"
        " CreateJob's grouped statement with its accounts' checks beside the INSERT alone since 0186)",
    ),
}
# A function over this many lines needs a `# long: <why>` comment just above its def.
MAX_FUNCTION_LINES = 60
# Modules that assemble processes (the composition root): the only ones outside service/api that
# may import it, because they start the API server.
COMPOSITION_ROOT = {"service/runtime.py"}
# Declares who owns (writes) each table: its "Who owns what" and "Second writers" tables.
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# Writes that break the one-writer rule today, each with why and when it goes: (table, module) -> why.
# An entry that no longer matches a write fails the test, so the list only shrinks. (Empty since
# privacy #17 moved pii.py's and records_store.py's job_results/paystubs writes into results.py.)
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
# Statements whose table name is computed at run time (`UPDATE {table} ...`): module -> the tables
# they can reach. Each reached table is then checked like a spelled one (owner or second writer).
COMPUTED_TABLES: dict[str, set[str]] = {
    "service/maintenance.py": {c.table for c in sealed.COLUMNS},  # vault reencrypt, every sealed column
    "service/records_store.py": {sealed.SHIFT_DATA.table, sealed.TAX_FORM_DATA.table},  # their sealing
}


def modules() -> list[pathlib.Path]:
    return sorted(SERVICE.rglob("*.py"))


def rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_is_over_about_400_lines() -> None:
    sizes = {rel(p): len(p.read_text().splitlines()) for p in modules()}
    too_long = [
        f"{path}: {n} lines (limit {LONG_MODULES.get(path, (MAX_MODULE_LINES,))[0]}): split it along a seam,"
        " or add it to LONG_MODULES with the reason"
        for path, n in sizes.items()
        if n > LONG_MODULES.get(path, (MAX_MODULE_LINES,))[0]
    ]
    stale = [
        f"{path}: {sizes.get(path, 0)} lines now: drop it from LONG_MODULES"
        for path in LONG_MODULES
        if sizes.get(path, 0) <= MAX_MODULE_LINES
    ]
    assert not too_long + stale, "\n".join(["", *too_long, *stale])


def test_no_function_is_over_60_lines_without_a_comment_saying_why() -> None:
    too_long = []
    for path in modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                header = lines[
                    max(0, node.lineno - 4) : node.lineno + 1
                ]  # comment lines above, the def, the next
                if length > MAX_FUNCTION_LINES and not any("# long:" in line for line in header):
                    too_long.append(f"{rel(path)}:{node.lineno} {node.name} ({length} lines)")
    assert too_long == []


def test_only_the_api_layer_imports_grpc_and_nothing_imports_it_upward() -> None:
    api = SERVICE / "api"
    grpc_users, upward = [], []
    for path in modules():
        names = imports(path)
        inside_api = api in path.parents
        if not inside_api and any(n == "grpc" or n.startswith("grpc.") for n in names):
            grpc_users.append(rel(path))
        if (
            not inside_api
            and rel(path) not in COMPOSITION_ROOT
            and any(n.startswith("service.api") for n in names)
        ):
            upward.append(rel(path))
    assert grpc_users == []
    assert upward == []


def test_job_status_literals_live_in_the_queue_only() -> None:
    """Status names are spelled once (queue.JobStatus); other modules use the enum."""
    literal = re.compile(r"'(queued|running|pending|success|error)'")
    spelled = [rel(p) for p in modules() if p.name != "queue.py" and literal.search(p.read_text())]
    assert spelled == []


def test_the_session_machine_does_no_io() -> None:
    names = imports(SERVICE / "session_machine.py")
    io = {"asyncpg", "grpc", "aiokafka", "service.db", "service.uow", "service.deps", "asyncio"}
    assert not {n for n in names if n.split(".")[0] in io or n in io}


# --- One writer per table (docs/architecture.md "Who owns what") ---------------------------------

_TABLE = r'(\{[^}]*\}|"?[A-Za-z_][\w.]*"?)'
# The statements that write rows, by the shape of their SQL (keywords in any case).
_WRITES = [
    re.compile(rf"\b(INSERT)\s+INTO\s+{_TABLE}", re.I),
    re.compile(rf"\b(UPDATE)\s+(?:ONLY\s+)?{_TABLE}(?:\s+(?:AS\s+)?\w+)?\s+SET\b", re.I),
    re.compile(rf"\b(DELETE)\s+FROM\s+(?:ONLY\s+)?{_TABLE}", re.I),
    re.compile(rf"\b(MERGE)\s+INTO\s+{_TABLE}", re.I),
    re.compile(rf"\b(TRUNCATE)\s+(?:TABLE\s+)?(?:ONLY\s+)?{_TABLE}", re.I),
    re.compile(rf"\b(COPY)\s+{_TABLE}(?:\s*\([^)]*\))?\s+FROM\b", re.I),
]
# asyncpg's COPY into a table: conn.copy_records_to_table("table", ...), copy_to_table.
_COPY_CALLS = {"copy_records_to_table", "copy_to_table"}


@dataclasses.dataclass(frozen=True)
class Write:
    module: str
    line: int
    verb: str
    table: str  # "{...}" when computed at run time
    columns: frozenset[str]  # an UPDATE's SET columns (empty for the others)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} {self.verb} {self.table}"


def _set_columns(sql: str) -> frozenset[str]:
    clause = re.split(
        r"\b(?:WHERE|FROM|RETURNING)\b", re.split(r"\bSET\b", sql, maxsplit=1, flags=re.I)[1], flags=re.I
    )[0]
    return frozenset(re.findall(r"(?:^|,)\s*(\w+)\s*=", clause))


def _text(node: ast.expr) -> str | None:
    """A string literal's text; an f-string's with each placeholder as `{its expression}`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    return None


class _Scan(ast.NodeVisitor):
    """Every write statement of one module. A table spelled `{name}` inside `for name in (...)`
    over string literals counts once per literal."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.loops: dict[str, list[str]] = {}
        self.found: list[Write] = []

    def visit_Expr(self, node: ast.Expr) -> None:
        if _text(node.value) is None:  # a docstring (or a bare string) is prose, not SQL
            self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        literals = node.iter.elts if isinstance(node.iter, (ast.Tuple, ast.List)) else []
        names = [e.value for e in literals if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if isinstance(node.target, ast.Name) and names and len(names) == len(literals):
            self.loops[node.target.id] = names
            self.generic_visit(node)
            del self.loops[node.target.id]
        else:
            self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr in _COPY_CALLS and node.args:
            table = _text(node.args[0])
            self._add(
                node.lineno,
                "COPY",
                table if table and "{" not in table else "{" + ast.unparse(node.args[0]) + "}",
                frozenset(),
            )
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        self._scan(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._scan(node)  # (its parts are not visited on their own)

    def _scan(self, node: ast.expr) -> None:
        text = _text(node)
        if text is None:
            return
        for pattern in _WRITES:
            for match in pattern.finditer(text):
                verb, table = match.group(1).upper(), match.group(2).strip('"').split(".")[-1]
                line = node.lineno + text[: match.start()].count("\n")
                columns = _set_columns(text[match.start() :]) if verb == "UPDATE" else frozenset()
                self._add(line, verb, table, columns)

    def _add(self, line: int, verb: str, table: str, columns: frozenset[str]) -> None:
        looped = self.loops.get(table[1:-1]) if table.startswith("{") else None
        for name in looped or [table if table.startswith("{") else table.lower()]:
            self.found.append(Write(self.module, line, verb, name, columns))


def writes() -> list[Write]:
    found: list[Write] = []
    for path in modules():
        text = path.read_text()
        scan = _Scan(rel(path))
        scan.visit(ast.parse(text))
        found.extend(scan.found)
    return found


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def _outside_parentheses(text: str) -> str:
    while (stripped := re.sub(r"\([^()]*\)", "", text)) != text:
        text = stripped
    return text


def _ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def _rows(header: str) -> list[list[str]]:
    """The rows of the docs/architecture.md table whose header row starts with `header`."""
    lines = ARCHITECTURE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def declared_owners() -> dict[str, str]:
    """table -> its owner module, from "Who owns what" (the tables a row names outside parentheses)."""
    owners: dict[str, str] = {}
    for row in _rows("| module | owns"):
        tables = _ticked(_outside_parentheses(row[1]))
        if not tables:
            continue
        modules_ = _ticked(row[0])
        assert len(modules_) == 1, f"one module per row that owns tables: {row[0]}"
        for table in tables:
            assert table not in owners, f"{table} has two owners: {owners[table]} and {modules_[0]}"
            owners[table] = f"service/{modules_[0]}"
    return owners


def second_writers() -> dict[tuple[str, str], frozenset[str] | None]:
    """(table, module) -> the columns it may UPDATE (None: the sealed columns, for re-sealing), from
    "Second writers"."""
    declared: dict[tuple[str, str], frozenset[str] | None] = {}
    for row in _rows("| table (columns) | second writer"):
        (module,) = _ticked(row[1])
        columns: frozenset[str] | None = frozenset(_ticked(row[0])) - frozenset(
            _ticked(_outside_parentheses(row[0]))
        )
        if "sealed.COLUMNS" in row[0]:
            columns = None
            assert set(_ticked(_outside_parentheses(row[0]))) == {c.table for c in sealed.COLUMNS}, row[0]
        for table in _ticked(_outside_parentheses(row[0])):
            declared[(table, f"service/{module}")] = columns
    return declared


def schema_tables() -> set[str]:
    sql = "\n".join(p.read_text() for p in sorted((ROOT / "migrations").glob("*.sql")))
    sql += "\n".join(p.read_text() for p in modules())
    return {t.lower() for t in re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql, re.I)}


def _check(
    write: Write, owners: dict[str, str], seconds: dict[tuple[str, str], frozenset[str] | None]
) -> list[str]:
    """Why this write breaks the rule (nothing when its module owns the table or may write it)."""
    key = (write.table, write.module)
    owner = owners.get(write.table)
    if write.module == owner or key in KNOWN_EXCEPTIONS:
        return []
    if key in seconds:
        allowed = seconds[key]
        if allowed is None or (write.verb == "UPDATE" and write.columns <= allowed):
            return []
        return [
            f"{write} (sets {sorted(write.columns)}): {write.module} may only UPDATE {sorted(allowed)}"
            f" of {write.table} (docs/architecture.md 'Second writers')"
        ]
    return [
        f"{write}: {write.table} is owned by {owner} (docs/architecture.md 'Who owns what');"
        " call the owner's function, or declare a second writer there with the reason"
    ]


def test_every_table_has_one_owner_and_only_it_writes() -> None:
    owners, seconds, tables = declared_owners(), second_writers(), schema_tables()
    problems = [
        f"{t}: no owner in docs/architecture.md 'Who owns what'" for t in sorted(tables - set(owners))
    ]
    problems += [
        f"{t}: owned in docs/architecture.md but no migration creates it"
        for t in sorted(set(owners) - tables)
    ]
    seen: set[tuple[str, str]] = set()
    for found in writes():
        reached = COMPUTED_TABLES.get(found.module, set()) if found.table.startswith("{") else {found.table}
        if not reached:
            problems.append(
                f"{found}: a table name computed at run time; spell it, loop over literals,"
                " or list what it can reach in COMPUTED_TABLES"
            )
        for table in sorted(reached):
            write = dataclasses.replace(found, table=table)
            problems += _check(write, owners, seconds)
            seen.add((write.table, write.module))
    problems += [
        f"{owner}: declared owner of {t} but writes it nowhere"
        for t, owner in owners.items()
        if (t, owner) not in seen
    ]
    problems += [
        f"{m}: declared second writer of {t} but writes it nowhere" for t, m in seconds if (t, m) not in seen
    ]
    problems += [
        f"{m}: no longer writes {t}: drop it from KNOWN_EXCEPTIONS"
        for t, m in KNOWN_EXCEPTIONS
        if (t, m) not in seen
    ]
    assert not problems, "\n".join(["", *problems])


def test_the_queue_owns_jobs_and_the_session_store_link_sessions() -> None:
    """Issue 9's two central owners, pinned: moving them is more than editing a table."""
    owners = declared_owners()
    assert (owners["jobs"], owners["link_sessions"]) == ("service/queue.py", "service/session_store.py")


def test_the_write_scanner_sees_every_form() -> None:
    """The scanner itself: each form of write is found (with its line and SET columns), reads are not."""
    source = '''
def f(conn):
    """UPDATE accounts SET x = 1 (a docstring: prose)."""
    conn.execute("SELECT 1 FROM a FOR UPDATE")
    conn.execute("INSERT INTO b (x) VALUES (1) ON CONFLICT (x) DO UPDATE SET x = 2")
    conn.execute(
        """
        UPDATE c AS cc SET y = 1, z = coalesce(z, 2) FROM d WHERE cc.id = d.id""")
    conn.execute(f"delete from {name} WHERE true")
    for table in ("e", "f"):
        conn.execute(f"DELETE FROM {table} WHERE true")
    conn.copy_records_to_table("g", records=[])
    conn.execute("COPY h (x) FROM STDIN")
    conn.execute("COPY i TO STDOUT")
'''
    scan = _Scan("m.py")
    scan.visit(ast.parse(source))
    assert [(w.line, w.verb, w.table, sorted(w.columns)) for w in scan.found] == [
        (5, "INSERT", "b", []),
        (8, "UPDATE", "c", ["y", "z"]),
        (9, "DELETE", "{name}", []),
        (11, "DELETE", "e", []),
        (11, "DELETE", "f", []),
        (12, "COPY", "g", []),
        (13, "COPY", "h", []),
    ]


def test_the_service_opens_connections_only_through_db_which_marks_them() -> None:
    """Migration 0174's release guard refuses job writes from a connection that does not say which
    schema it knows: service code opens connections only with db.connect and db.create_pool, which
    send `paylink.schema` (tests/integration/test_release_guard.py checks what they send)."""
    opens = re.compile(r"\basyncpg\.(connect|create_pool)\(")
    assert [rel(p) for p in modules() if p.name != "db.py" and opens.search(p.read_text())] == []
