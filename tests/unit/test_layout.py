"""Who owns what (issue 9), checked on the source: these rules hold for every future change too."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
MAX_MODULE_LINES = 400
# Modules allowed over MAX_MODULE_LINES: path -> (their ceiling, why). An entry that is no longer
# needed fails too, so the list only shrinks.
LONG_MODULES: dict[str, tuple[int, str]] = {
    "service/queue.py": (410, "bench (#14) is reshaping the queue for batched completions; split with it"),
    "service/drivers/sandbox.py": (410, "core (#10) is reshaping the sandbox driver for link sessions"),
}
# A function over this many lines needs a `# long: <why>` comment just above its def.
MAX_FUNCTION_LINES = 60
# Modules that assemble processes (the composition root): the only ones outside service/api that
# may import it, because they start the API server.
COMPOSITION_ROOT = {"service/runtime.py"}
# Modules allowed to import grpc: the API layer (service/api/).
JOBS_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+jobs\b", re.I)


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
    assert too_long + stale == []


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


def test_only_the_queue_writes_jobs_rows() -> None:
    writers = [rel(p) for p in modules() if JOBS_WRITE.search(p.read_text())]
    assert writers == ["service/queue.py"]


def test_job_status_literals_live_in_the_queue_only() -> None:
    """Status names are spelled once (queue.JobStatus); other modules use the enum."""
    literal = re.compile(r"'(queued|running|pending|success|error)'")
    spelled = [rel(p) for p in modules() if p.name != "queue.py" and literal.search(p.read_text())]
    assert spelled == []


def test_only_the_session_store_writes_link_sessions() -> None:
    write = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+link_sessions\b", re.I)
    assert [rel(p) for p in modules() if write.search(p.read_text())] == ["service/session_store.py"]


def test_the_session_machine_does_no_io() -> None:
    names = imports(SERVICE / "session_machine.py")
    io = {"asyncpg", "grpc", "aiokafka", "service.db", "service.uow", "service.deps", "asyncio"}
    assert not {n for n in names if n.split(".")[0] in io or n in io}
