"""The documentation holds together: the README stays a front door (under 120
lines), every relative link of README.md and docs/*.md reaches an existing
file (and, into a Markdown page, an existing heading), every shipped config
is documented, and the reliability mechanism is described in one page only."""
import glob
import os
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(ROOT, 'README.md')
PAGES = sorted(glob.glob(osp.join(ROOT, 'docs', '*.md')))
# Pages the README's documentation table links to. Five of them are written in
# other branches (docs/reliability.md, security.md, checkpoints.md,
# video_readers.md, architecture.md); the link test is strict, so it fails
# until all of them exist.
LINKED_FROM_README = ['cast.md', 'ek100.md', 'audio_visual.md', 'msca.md',
                      'training.md', 'weights.md', 'checkpoints.md',
                      'inference.md', 'datasets.md', 'video_readers.md',
                      'reliability.md', 'security.md', 'benchmarks.md',
                      'architecture.md', 'install.md', 'tests.md']

LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def _strip_code(text):
    """Text without fenced code blocks and inline code spans (links there are
    examples, not links)."""
    text = re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)
    return re.sub(r'`[^`\n]*`', '', text)


def _links(path):
    text = _strip_code(open(path, encoding='utf-8').read())
    for m in LINK.finditer(text):
        yield m.group(1) or m.group(2)


def _slug(heading):
    """GitHub's anchor of a heading: lower case, inline code marks and
    punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower().replace('`', '')
    s = re.sub(r'[^\w\- ]', '', s)
    return s.replace(' ', '-')


def _anchors(path):
    text = re.sub(r'^```.*?^```', '', open(path, encoding='utf-8').read(),
                  flags=re.S | re.M)
    seen, anchors = {}, set()
    for m in re.finditer(r'^#{1,6} (.+?)\s*#*\s*$', text, re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f'{slug}-{n}')
    return anchors


def test_slug_rule():
    assert _slug('The demo (`make demo`)') == 'the-demo-make-demo'
    assert _slug('4. Evaluate on the validation split (2 clips x 3 crops)') \
        == '4-evaluate-on-the-validation-split-2-clips-x-3-crops'
    assert _slug("The authors' fine-tuned checkpoints") \
        == 'the-authors-fine-tuned-checkpoints'
    assert _slug('torch.compile') == 'torchcompile'


def test_readme_is_a_front_door():
    with open(README, encoding='utf-8') as f:
        n = sum(1 for _ in f)
    assert n < 120, f'README.md has {n} lines; move details into docs/'


def test_readme_links_every_docs_page():
    linked = {osp.normpath(osp.join(ROOT, t.split('#')[0]))
              for t in _links(README) if not re.match(r'\w+:', t)}
    for name in LINKED_FROM_README:
        assert osp.join(ROOT, 'docs', name) in linked, \
            f'README.md does not link docs/{name}'
    for page in PAGES:
        assert page in linked, \
            f'{osp.relpath(page, ROOT)} is not linked from README.md'


@pytest.mark.parametrize('path', [README] + PAGES,
                         ids=lambda p: osp.relpath(p, ROOT))
def test_relative_links_resolve(path):
    """Every relative link reaches an existing file; a '#anchor' into a
    Markdown page must name one of its headings (also within the page)."""
    broken = []
    for target in _links(path):
        if re.match(r'[a-z][\w+.-]*:', target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition('#')
        dest = (osp.normpath(osp.join(osp.dirname(path), file_part))
                if file_part else path)
        if not osp.exists(dest):
            broken.append(f'{target}: {osp.relpath(dest, ROOT)} does not exist')
        elif anchor and dest.endswith('.md') and anchor not in _anchors(dest):
            broken.append(f'{target}: no heading #{anchor} in '
                          f'{osp.relpath(dest, ROOT)}')
    assert not broken, f'{osp.relpath(path, ROOT)}: ' + '; '.join(broken)


def test_every_config_is_documented():
    configs = sorted(f for f in os.listdir(osp.join(ROOT, 'configs'))
                     if f.endswith('.py'))
    text = '\n'.join(open(p, encoding='utf-8').read()
                     for p in [README] + PAGES)
    missing = [c for c in configs if c not in text]
    assert not missing, f'configs named in no docs page: {missing}'


def test_reliability_mechanism_lives_in_its_own_page():
    """How the reliability features are wired is described once, in
    docs/reliability.md; other pages link there."""
    pattern = re.compile(r'apply_reliability|reliability\s*=\s*dict\(|'
                         r'--cfg-options reliability\.')
    offenders = [osp.relpath(p, ROOT) for p in [README] + PAGES
                 if not p.endswith(osp.join('docs', 'reliability.md'))
                 and pattern.search(open(p, encoding='utf-8').read())]
    assert not offenders, f'reliability mechanism described in {offenders}'


# A path under tools/ or benchmarks/ named in README.md or docs/*.md (in
# text or in a command) exists; a pattern (`*`, `{a,b}`) matches a file for
# each of its alternatives; outputs a command writes (after --json / --out)
# are not checked.
NAMED_PATH = re.compile(
    r'(?<![\w/.-])(?:(--json|--out|-o)\s+)?((?:tools|benchmarks)/[\w./*{},-]*[\w/*}])')


# benchmarks/README.md names its files from its own folder: runs/..., scripts/...
NAMED_HERE = re.compile(
    r'(?<![\w/.-])(?:(--json|--out|-o)\s+)?((?:runs|scripts)/[\w./*{},-]*[\w/*}])')


def _named_paths(text, patterns=False, rule=NAMED_PATH, prefix=''):
    for m in rule.finditer(text):
        written, path = m.groups()
        if written or patterns != any(c in path for c in '*{'):
            continue
        yield prefix + path


def _expand_braces(pattern):
    """The shell's brace expansion: ``a{b,c{d,e}}`` -> ab, acd, ace."""
    start = pattern.find('{')
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {'{': 1, '}': -1}.get(pattern[end], 0)
        if depth == 0:
            break
    else:
        return [pattern]  # unbalanced: taken as it is
    parts, depth, last = [], 0, start + 1
    for i in range(start + 1, end):
        c = pattern[i]
        depth += {'{': 1, '}': -1}.get(c, 0)
        if c == ',' and depth == 0:
            parts.append(pattern[last:i])
            last = i + 1
    parts.append(pattern[last:end])
    head, tail = pattern[:start], pattern[end + 1:]
    return [x for part in parts for x in _expand_braces(head + part + tail)]


def test_expand_braces():
    assert _expand_braces('r/a_{b1,b2}_{x,}.txt') == [
        'r/a_b1_x.txt', 'r/a_b1_.txt', 'r/a_b2_x.txt', 'r/a_b2_.txt']
    assert _expand_braces('a{b,c{d,e}}') == ['ab', 'acd', 'ace']
    assert _expand_braces('plain') == ['plain']


def test_named_paths_rule():
    text = ('run `python tools/train.py x` (raw: benchmarks/runs/a.json, '
            'benchmarks/runs/b_*.json, benchmarks/runs/c{1,2}.json); '
            'python tools/benchmark/bench_readers.py --json benchmarks/runs/new.json.')
    assert list(_named_paths(text)) == [
        'tools/train.py', 'benchmarks/runs/a.json',
        'tools/benchmark/bench_readers.py']


@pytest.mark.parametrize('path', [README, osp.join(ROOT, 'benchmarks', 'README.md')]
                         + PAGES, ids=lambda p: osp.relpath(p, ROOT))
def test_named_tools_and_benchmark_files_exist(path):
    text = open(path, encoding='utf-8').read()
    rules = [(NAMED_PATH, '')]
    if path == osp.join(ROOT, 'benchmarks', 'README.md'):
        rules.append((NAMED_HERE, 'benchmarks/'))

    def named(patterns):
        return {p for rule, prefix in rules
                for p in _named_paths(text, patterns, rule, prefix)}
    missing = sorted({p for p in named(False)
                      if not osp.exists(osp.join(ROOT, p))})
    # each alternative of a pattern matches at least one file
    missing += sorted({f'{x} (of {p})' for p in named(True)
                       for x in _expand_braces(p)
                       if not glob.glob(osp.join(ROOT, x))})
    assert not missing, f'{osp.relpath(path, ROOT)} names missing files: {missing}'


# A tools/ script the code names (an error message's "run tools/...", a
# docstring) exists: one was named where it no longer was
# (tools/convert_checkpoint.py, moved into tools/convert/).
CODE_TOOL = re.compile(r'(?<![\w/.])tools/[\w/]+\.(?:py|sh)')


def test_tool_scripts_named_in_code_exist():
    sources = [p for folder in ('cast_mmaction', 'tools', 'configs')
               for p in glob.glob(osp.join(ROOT, folder, '**', '*.py'),
                                  recursive=True)]
    assert len(sources) > 50
    missing = sorted({f'{osp.relpath(p, ROOT)}: {name}' for p in sources
                      for name in CODE_TOOL.findall(
                          open(p, encoding='utf-8').read())
                      if not osp.exists(osp.join(ROOT, name))})
    assert not missing, missing
    assert CODE_TOOL.findall("'(tools/convert/x.py --tower', util_tools/u.py"
                             ) == ['tools/convert/x.py']


# A dotted name of the package the docs cite (``cast_mmaction.utils.cpu_facts``)
# exists: the longest importable module, then attributes.
DOTTED = re.compile(r'(?<![\w./])cast_mmaction(?:\.\w+)+')


def _resolves(name):
    import importlib
    parts = name.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_dotted_names_rule():
    assert _resolves('cast_mmaction.utils.cpu_facts')
    assert not _resolves('cast_mmaction.models.layers.linear')
    assert not _resolves('cast_mmaction.no_such_module.x')
    assert DOTTED.findall('see `cast_mmaction.utils.cpu_facts()` and '
                          'cast_mmaction/models/x.py') == [
        'cast_mmaction.utils.cpu_facts']


@pytest.mark.parametrize('path', [README, osp.join(ROOT, 'benchmarks', 'README.md')]
                         + PAGES, ids=lambda p: osp.relpath(p, ROOT))
def test_named_package_objects_exist(path):
    names = set(DOTTED.findall(open(path, encoding='utf-8').read()))
    missing = sorted(n for n in names if not _resolves(n))
    assert not missing, (f'{osp.relpath(path, ROOT)} names what the package '
                         f'does not have: {missing}')


# The docs state what is true now; history belongs in commit messages.
HISTORY = re.compile(r'\bissue\s*#?\s*\d+|\bthis branch\b|\b(?:before|after) this '
                     r'change\b|\bchangelog\b', re.I)


def test_history_rule():
    for text in ('see issue #16', 'Issue 12', 'issue#3', '(this branch)',
                 'a checkpoint written before this change', 'Changelog'):
        assert HISTORY.search(text), text
    for text in ('an issue of the upstream package', 'issued 16 times',
                 'the branch modules', 'changes the lr'):
        assert not HISTORY.search(text), text


@pytest.mark.parametrize('path', [README] + PAGES,
                         ids=lambda p: osp.relpath(p, ROOT))
def test_docs_carry_no_history(path):
    text = open(path, encoding='utf-8').read()
    hits = [m.group(0) for m in HISTORY.finditer(text)]
    assert not hits, (f'{osp.relpath(path, ROOT)}: {hits}; state facts and '
                      'commands, keep history in commit messages')
