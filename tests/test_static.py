"""The package type-checks, passes ruff, and keeps its architecture contracts (import-linter)."""
from __future__ import annotations

import subprocess
import sys

from .helpers import ROOT


def test_mypy():
    res = subprocess.run([sys.executable, "-m", "mypy", "registry_tools", "--ignore-missing-imports",
                          "--cache-dir", "/tmp/registry-tools-mypy-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "registry_tools", "tests", "bench"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_contracts():
    """The model imports nothing of the registry or the formats; formats never import the registry;
    nothing imports the CLI; the packages stack in layers (pyproject.toml [tool.importlinter])."""
    res = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command())", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_sizes_stay_readable():
    """No module over 400 lines, no class over 200, no function over 60 (ARCHITECTURE's habits)."""
    import ast

    too_big = []
    for path in sorted((ROOT / "registry_tools").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > 400:
            too_big.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            limit = 200 if isinstance(node, ast.ClassDef) else 60
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
                too_big.append(f"{rel}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_big, "\n".join(too_big)


def test_one_worker_pool_per_operation():
    """Threads for concurrent work come from the operation's Workers only (registry_tools/workers.py):
    no other module makes a thread pool of its own."""
    makers = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "registry_tools").rglob("*.py"))
              if "ThreadPoolExecutor" in p.read_text() or "ProcessPoolExecutor" in p.read_text()]
    assert makers == ["registry_tools/workers.py"]


def _package_cycles() -> list[list[str]]:
    """Groups of modules of one package that import each other in a loop (grimp's graph of the
    package's own imports; strongly connected components of more than one module)."""
    import grimp

    graph = grimp.build_graph("registry_tools")
    modules = sorted(graph.modules)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m)
                 if i.rpartition(".")[0] == m.rpartition(".")[0]} for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in edges[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))
    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_module_imports_its_own_package_in_a_loop():
    """Inside every package, modules import each other without cycles (the CLI's command modules
    and the registry's client, tokens and repository once did)."""
    assert _package_cycles() == []


ENDPOINT_CLASSES = {"Endpoint", "RegistryEndpoint", "FileEndpoint", "LayoutEndpoint", "OciArchiveEndpoint",
                    "DockerArchiveEndpoint", "PodmanEndpoint"}
TRANSPORT_WORDS = {"docker://", "oci:", "oci-archive:", "docker-archive:", "podman:", "registry", "oci",
                   "oci-archive", "docker-archive", "podman"}


def kind_switches(source: str) -> list[str]:
    """Where code asks which kind an endpoint is: isinstance with an endpoint class, a `.scheme` or
    `.kind` compared with a transport's name, or a transport prefix tested with startswith."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            names = {getattr(n, "attr", getattr(n, "id", None)) for n in ast.walk(node.args[1])}
            if names & ENDPOINT_CLASSES:
                found.append(f"line {node.lineno}: isinstance with an endpoint class")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            asks = [n.attr for n in sides if isinstance(n, ast.Attribute) and n.attr in ("scheme", "kind")]
            words = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in TRANSPORT_WORDS]
            if asks and words:
                found.append(f"line {node.lineno}: .{asks[0]} compared with a transport name")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "startswith" and any(
                isinstance(a, ast.Constant) and a.value in TRANSPORT_WORDS and str(a.value).endswith((":", "//"))
                for a in node.args):
            found.append(f"line {node.lineno}: startswith a transport prefix")
    return found


def test_no_module_but_the_endpoint_table_switches_on_the_kind_of_an_endpoint():
    """An endpoint is parsed once (registry_tools/endpoint.py) and asked what it can do; no other
    module asks which kind it is."""
    assert kind_switches("if isinstance(e, endpoint.LayoutEndpoint): pass") and \
        kind_switches("if e.scheme == 'oci:': pass") and kind_switches("text.startswith('oci-archive:')") and \
        kind_switches("ok = src.kind in ('registry', 'oci')")
    offenders = {}
    for path in sorted((ROOT / "registry_tools").rglob("*.py")):
        if path.name == "endpoint.py":
            continue
        found = kind_switches(path.read_text())
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_no_public_function_takes_more_than_six_parameters():
    """Options are one typed value per operation (go-containerregistry's remote.Option is the model)."""
    import ast

    wide = []
    for path in sorted((ROOT / "registry_tools").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                a = node.args
                params = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                n = len(params) + (a.vararg is not None) + (a.kwarg is not None)
                if n > 6:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n}")
    assert wide == []


# httpx's errors become the project's in one place (registry/transport.py, project_errors); network.py
# reads a proxy's and a URL's own errors as it opens a route; two best-effort reads ignore any failure.
HTTPX_CATCHES = {
    "registry_tools/registry/network.py": {"InvalidURL", "ProxyError", "ConnectError", "ConnectTimeout"},
    "registry_tools/registry/client.py": {"HTTPError"},  # error_detail: a body that cannot be read says nothing
    "registry_tools/registry/upload.py": {"HTTPError"},  # cancel: a failed DELETE of a failed upload is ignored
}


def httpx_catches(source: str) -> set[str]:
    """The httpx exception classes the module's `except` clauses name."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            for n in ast.walk(node.type):
                if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "httpx":
                    names.add(n.attr)
    return names


def test_httpx_errors_are_caught_only_where_they_are_made_the_projects():
    assert httpx_catches("try:\n    pass\nexcept (ValueError, httpx.ReadTimeout):\n    pass") == {"ReadTimeout"}
    found = {}
    for path in sorted((ROOT / "registry_tools").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        names = httpx_catches(path.read_text())
        if names and rel != "registry_tools/registry/transport.py":
            found[rel] = names
    assert found == HTTPX_CATCHES
