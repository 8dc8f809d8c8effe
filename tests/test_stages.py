"""The stage table agrees with dvc.yaml, the CLI, the Dagster definitions and the README; the
import graph of kws_core has no cycle and no upward edge between stage packages."""

import ast

import pytest
import yaml

from kws_core.cli import COMMANDS
from kws_core.stages import STAGES, direct_upstream, render_code_map, stage
from tests.conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _outs(entry: dict) -> set[str]:
    paths = set()
    for kind in ("outs", "metrics", "plots"):
        for item in entry.get(kind, []):
            paths.add(next(iter(item)) if isinstance(item, dict) else item)
    return paths


def test_dvc_yaml_has_the_table_s_stages_in_order_with_their_verbs_params_and_code():
    assert list(DVC) == [s.name for s in STAGES]
    for s in STAGES:
        entry = DVC[s.name]
        cmds = entry["cmd"] if isinstance(entry["cmd"], list) else [entry["cmd"]]
        assert all(c.startswith(f"kws {s.verb} ") for c in cmds), (s.name, cmds)
        assert set(entry["params"]) == set(s.params), s.name
        deps = entry.get("deps", [])
        code = [d for d in deps if d.startswith("kws_core/")]
        assert code == list(s.code), s.name
        for path in s.code:
            assert (REPO / path).exists(), path
        # it reads an output of every upstream stage, and nothing of a stage not upstream
        outputs = {o: other.name for other in STAGES for o in _outs(DVC[other.name])}
        read = {outputs[d] for d in deps if d in outputs}
        assert read == set(s.upstream), (s.name, read)


def test_every_stage_is_a_cli_verb_a_step_and_has_its_tests():
    import kws_core.steps as steps

    for s in STAGES:
        assert s.verb in COMMANDS, s.verb
        assert callable(getattr(steps, s.step)), s.step
        for t in s.tests:
            assert (REPO / t).is_file(), t
        for up in s.upstream:
            assert stage(up).name == up


def test_dagster_assets_and_their_deps_follow_the_table():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string(): k for k in graph.get_all_asset_keys()}
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for s in STAGES:
        if s.is_check:
            assert (s.asset, s.dagster.split(":")[1]) in checks
            continue
        assert s.asset in keys, s.asset
        want = {stage(u).asset for u in direct_upstream(s) if not stage(u).is_check}
        got = {p.to_user_string() for p in graph.get(keys[s.asset]).parent_keys}
        assert got == want, (s.asset, got, want)


def test_readme_code_map_is_rendered_from_the_table():
    readme = (REPO / "README.md").read_text()
    assert render_code_map() in readme, "run `python -m kws_core.stages readme`"


# The stage packages from the bottom up: a module may import its own layer and those below.
LAYERS = [
    "infra",
    "config",
    "params_doc",
    "data",
    "features",
    "training",
    "export",
    "streaming",
    "demo",
    "steps",
    "stages",
    "cli",
]


def _import_graph() -> dict[str, set[str]]:
    root = REPO / "kws_core"
    modules = {}
    for f in root.rglob("*.py"):
        name = ".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = f
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kws_core"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("kws_core")}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def test_kws_core_imports_have_no_upward_edge_and_no_cycle():
    graph = _import_graph()
    assert all(m == "kws_core" or m.split(".")[1] in LAYERS for m in graph), "new top-level?"
    upward = [
        (m, e)
        for m, edges in graph.items()
        for e in edges
        if m != "kws_core" and _layer(e) > _layer(m)
    ]
    assert not upward, upward
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for e in sorted(graph[m]):
            assert state.get(e) != 1, "import cycle: " + " -> ".join([*path, m, e])
            if e not in state:
                visit(e, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    # the import-graph depth the restructuring left (README, closing note): keep it shallow
    depth: dict[str, int] = {}

    def level(m: str) -> int:
        if m not in depth:
            depth[m] = 1 + max((level(e) for e in graph[m]), default=0)
        return depth[m]

    assert max(level(m) for m in graph) <= 14  # 14: training.report sits between loop and evaluate


def test_an_upward_import_is_caught():
    """The checker itself can fail: a fake edge from infra up to training is found."""
    graph = _import_graph()
    graph["kws_core.infra.errors"].add("kws_core.training.loop")
    upward = [(m, e) for m, edges in graph.items() for e in edges if _layer(e) > _layer(m)]
    assert ("kws_core.infra.errors", "kws_core.training.loop") in upward


def test_stage_lookup_names_the_known_stages():
    with pytest.raises(KeyError, match="dataset"):
        stage("nope")
