"""The package has no import circle: the module-level imports between
``cast_mmaction`` modules form a graph without cycles (found statically, so
a circle that happens to import fine in one order is still caught)."""
import ast
import os

from conftest import ROOT

PKG = 'cast_mmaction'


def _modules():
    mods = {}
    base = os.path.join(ROOT, PKG)
    for dirpath, dirnames, files in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(('.', '_'))]
        for f in files:
            if not f.endswith('.py'):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3]
            parts = rel.split(os.sep)
            is_pkg = parts[-1] == '__init__'
            if is_pkg:
                parts = parts[:-1]
            mods['.'.join(parts)] = (os.path.join(dirpath, f), is_pkg)
    return mods


def _import_time_nodes(tree):
    """Import statements that run when the module is imported: everything
    except the bodies of functions (lazy imports)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                   ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def import_graph(lazy=False):
    """{module: set of package modules it imports}; with ``lazy`` the
    imports inside functions count too."""
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        nodes = (n for n in ast.walk(tree)
                 if isinstance(n, (ast.Import, ast.ImportFrom))) if lazy \
            else _import_time_nodes(tree)
        here = name if is_pkg else name.rsplit('.', 1)[0]
        edges = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = here.split('.')
                    base = base[:len(base) - node.level + 1]
                    src = '.'.join(base + ([node.module] if node.module
                                           else []))
                else:
                    src = node.module or ''
                targets = [f'{src}.{a.name}' if f'{src}.{a.name}' in mods
                           else src for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import a.b.c` -> nearest module
                    t = t.rpartition('.')[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert 'cast_mmaction.parity' in graph
    assert 'cast_mmaction.checkpoints' in graph['cast_mmaction.parity.av']
    assert 'cast_mmaction.checkpoints.state_dict' in graph[
        'cast_mmaction.checkpoints.registry']
    assert 'cast_mmaction.parity.av' in graph['cast_mmaction.parity']


def test_the_cycle_finder_finds_cycles():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]
    assert cycles({'a': {'b'}, 'b': set()}) == []


def test_no_import_circle():
    found = cycles(import_graph())
    assert not found, f'import circles between modules: {found}'


def test_no_import_circle_even_through_lazy_imports():
    """No circle hides behind function-level imports either."""
    found = cycles(import_graph(lazy=True))
    assert not found, f'circles through lazy imports: {found}'
