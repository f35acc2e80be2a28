"""The package's hooks, one module each, registered in MMAction2's HOOKS on
import. The reliability ones are named in ``configs/_base_/reliability.py``
and ``configs/_base_/default_runtime.py`` (docs/reliability.md)."""
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .bad_sample_hook import BadSampleHook, TooManyBadSamplesError
from .elastic_resume_hook import ElasticResumeHook
from .parameter_count_hook import ParameterCountHook
from .rank_watchdog_hook import RankWatchdogHook
from .resume_state_hook import ResumeStateHook, get_rng_state, set_rng_state
from .speedups_hook import SpeedupsHook
from .startup_check_hook import StartupCheckHook, check_model

__all__ = [
    'AtomicCheckpointHook', 'BadSampleHook', 'TooManyBadSamplesError',
    'ElasticResumeHook', 'ParameterCountHook', 'RankWatchdogHook',
    'ResumeStateHook', 'get_rng_state', 'set_rng_state', 'SpeedupsHook',
    'StartupCheckHook', 'check_model'
]
