"""The study: Optuna's SQLite storage (study.db), a sampler that starts quasi-random and goes on with TPE,
the median pruner, and the recovery of trials a kill interrupted."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import optuna
from optuna.samplers import BaseSampler, QMCSampler, TPESampler
from optuna.trial import TrialState

from ..recipes import SweepSettings


def open_study(directory: Path, name: str, dists: dict, settings: SweepSettings) -> optuna.Study:
    """The study in DIR/study.db (made, or loaded to go on with)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = LockedRDBStorage(
        f"sqlite:///{(directory / 'study.db').resolve()}", engine_kwargs={"connect_args": {"timeout": 60}}
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=settings.prune_startup_trials, n_warmup_steps=settings.prune_from_epoch
    )
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=make_sampler(dists, settings),
        pruner=pruner,
    )


class LockedRDBStorage(optuna.storages.RDBStorage):
    """SQLite ignores SELECT ... FOR UPDATE, so two threads could both take the same queued (WAITING)
    trial; the state change is made atomic within this process (one sweep process per directory)."""

    _lock = threading.Lock()

    def set_trial_state_values(self, trial_id, state, values=None):
        with self._lock:
            return super().set_trial_state_values(trial_id, state, values)


def make_sampler(dists: dict, settings: SweepSettings):
    """Scrambled Sobol points for trial numbers < startup_trials, TPE after."""

    class QmcThenTpe(BaseSampler):
        def __init__(self):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # QMCSampler and multivariate TPE are "experimental"
                self.qmc = QMCSampler(scramble=True, seed=settings.seed, warn_independent_sampling=False)
                self.tpe = TPESampler(seed=settings.seed, n_startup_trials=0, multivariate=True, constant_liar=True)
            self.lock = threading.Lock()  # QMC's sample counter is a read-then-write of a study attribute

        def _qmc(self, trial):
            return trial.number < settings.startup_trials

        def infer_relative_search_space(self, study, trial):
            # QMC: the whole declared space from the first trial on (not inferred from finished trials)
            return dict(dists) if self._qmc(trial) else self.tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if self._qmc(trial):
                with self.lock, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scipy: Sobol balance wants 2^k points
                    return self.qmc.sample_relative(study, trial, search_space)
            return self.tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, dist):
            return (self.qmc if self._qmc(trial) else self.tpe).sample_independent(study, trial, name, dist)

        def before_trial(self, study, trial):
            (self.qmc if self._qmc(trial) else self.tpe).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            (self.qmc if self._qmc(trial) else self.tpe).after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.qmc.reseed_rng()
            self.tpe.reseed_rng()

    return QmcThenTpe()


def recover(study) -> int:
    """Trials a kill left RUNNING are failed; every failed trial not yet retried is queued again with
    its parameters. Returns how many were queued."""
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            queued += 1
    return queued
