"""``hf:ORG/NAME[@REVISION]``: a model in the local Hugging Face cache.

Resolved the way ``huggingface_hub`` lays its cache out, without importing
it and without any network access:

    <cache>/models--ORG--NAME/refs/<revision>        (a commit hash)
    <cache>/models--ORG--NAME/snapshots/<commit>/    (config.json, weights)

``<cache>`` is ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE`` (the older
name), else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
``~/.cache/huggingface/hub`` (huggingface_hub's own order). The revision is
``main`` unless given (a branch / tag name under ``refs/`` or a commit
hash). Fill the cache once where there is network access, e.g.
``huggingface-cli download MCG-NJU/videomae-base`` (or ``hf download``), and
copy it (or point ``HF_HUB_CACHE`` at it).
"""
import os
import os.path as osp

PREFIX = 'hf:'


def is_hf_reference(source):
    return isinstance(source, str) and source.startswith(PREFIX)


def hub_cache():
    """(cache folder, how it was chosen)."""
    env = os.environ
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        if env.get(var):
            return osp.expanduser(env[var]), f'${var}'
    if env.get('HF_HOME'):
        return osp.join(osp.expanduser(env['HF_HOME']), 'hub'), '$HF_HOME/hub'
    if env.get('XDG_CACHE_HOME'):
        return (osp.join(env['XDG_CACHE_HOME'], 'huggingface', 'hub'),
                '$XDG_CACHE_HOME/huggingface/hub')
    return (osp.expanduser(osp.join('~', '.cache', 'huggingface', 'hub')),
            'the default ~/.cache/huggingface/hub')


def _parse(source):
    ref = source[len(PREFIX):]
    repo, _, rev = ref.partition('@')
    parts = repo.split('/')
    if len(parts) != 2 or not all(parts):
        raise ValueError(f'{source!r}: a Hugging Face reference reads '
                         f'hf:ORG/NAME or hf:ORG/NAME@REVISION, e.g. '
                         f'hf:MCG-NJU/videomae-base')
    return repo, rev or 'main'


def resolve(source):
    """The snapshot folder of ``hf:ORG/NAME[@REV]`` in the local cache;
    FileNotFoundError naming the folder looked at when it is absent."""
    repo, rev = _parse(source)
    cache, how = hub_cache()
    folder = osp.join(cache, 'models--' + repo.replace('/', '--'))
    fetch = (f'Download it once where there is network access '
             f'(`huggingface-cli download {repo}` or `hf download {repo}`) '
             f'and copy the cache here, or set HF_HUB_CACHE / HF_HOME to '
             f'the cache that holds it, or pass the saved model folder '
             f'itself. Nothing is downloaded here.')
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'{source}: not in the local Hugging Face cache: {folder} does '
            f'not exist (cache {cache}, from {how}). {fetch}')
    snapshots = osp.join(folder, 'snapshots')
    found = sorted(os.listdir(snapshots)) if osp.isdir(snapshots) else []
    ref_file = osp.join(folder, 'refs', rev)
    if osp.isfile(ref_file):
        with open(ref_file) as f:
            commit = f.read().strip()
    elif rev in found:  # a commit hash
        commit = rev
    elif rev == 'main' and len(found) == 1:  # refs/ not copied along
        commit = found[0]
    else:
        raise FileNotFoundError(
            f'{source}: revision {rev!r} not in the local Hugging Face cache '
            f'{folder} (no refs/{rev}; snapshots: {found or "none"}). '
            f'{fetch}')
    snap = osp.join(snapshots, commit)
    if not osp.isdir(snap):
        raise FileNotFoundError(
            f'{source}: {snap} (revision {rev} = {commit}) is missing from '
            f'the local Hugging Face cache. {fetch}')
    return snap


__all__ = ['is_hf_reference', 'hub_cache', 'resolve']
