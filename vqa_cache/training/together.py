"""Several cached trainings in one pass over the cache (`sweep --parallel K`).

The runs share what decides their batches (features, answers, seed, batch size: group_key) and differ in
their optimizer and head settings. Each epoch's batches are drawn and gathered once (SharedPass) and
each batch goes to every run: the runs are dealt to a pool of threads, each thread steps its runs on
each batch at its own pace, each torch op single-threaded (the sweep sets the threads), so that the runs
share the CPUs instead of splitting every small op between them. Validations and the epochs' records go
to the threads too; an epoch ends for all runs together.

Each run keeps its own stream of random numbers (dropout masks): its training forwards take turns on
torch's global generator, with the run's state swapped in and out (RngSlot). So a run draws here exactly
the masks it draws alone, sees the same batches in the same order and takes the same steps: its metrics
are its own `train` run's (tests/test_sweep.py compares them). Only one run's forward holds the generator
at a time; backward passes and optimizer steps, most of a step, run side by side.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch

from .. import heads, tracking
from ..recipes import TrainRecipe, to_dict
from ..rundir import rng_state, run_directory
from .batches import epoch_batches
from .cached import CachedFit
from .features import Features
from .loop import begin_fit, end_epoch, end_fit, fit_batch, stopped_early, validate
from .steps import History, StepLosses


def group_key(recipe: TrainRecipe) -> str:
    """Runs of equal keys see the same batches: all but their optimizer and head settings agree (the
    batch size and what the head reads excepted)."""
    d = to_dict(recipe)
    head, optim = d.pop("head"), d.pop("optim")
    d.pop("name", None)
    d.pop("out", None)
    return json.dumps([d, optim["batch_size"], heads.needs(head["name"])], sort_keys=True)


class RngSlot:
    """A run's own stream of torch's global random numbers (CPU, and its CUDA device's): `with slot():`
    swaps it in, and out again after; one slot at a time."""

    lock = threading.Lock()

    def __init__(self, device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        self.state = self.get()

    def checkpoint_state(self) -> dict:
        """rundir.rng_state() with this run's stream for torch's (last.pt's record)."""
        state = rng_state()
        state["torch"] = self.state[0]
        if self.cuda:
            state["cuda"][self.cuda.index or 0] = self.state[1]
        return state

    def get(self):
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.cuda) if self.cuda else None

    @contextlib.contextmanager
    def __call__(self):
        with self.lock:
            cpu, cuda = self.state
            torch.set_rng_state(cpu)
            if self.cuda:
                torch.cuda.set_rng_state(cuda, self.cuda)
            try:
                yield
            finally:
                self.state = self.get()


@dataclasses.dataclass(eq=False)
class Member:
    """One run of the group: what `train` would hold for it, and how it ended (metrics or the exception)."""

    stack: contextlib.ExitStack
    fit: CachedFit | None = None
    history: History | None = None
    model: torch.nn.Module | None = None
    on_epoch: object = None
    started: float = 0.0
    outcome: object = None
    done: bool = False

    def end(self, outcome) -> None:
        """The run ends with `outcome` (its metrics, or the exception that ended it: the trackers and the
        run directory's lock see it, as a `train` run's would)."""
        self.outcome, self.done = outcome, True
        if isinstance(outcome, BaseException):
            self.stack.__exit__(type(outcome), outcome, outcome.__traceback__)
        else:
            self.stack.close()

    def attempt(self, step) -> None:
        """step(); an Exception it raises ends this run (not the group's others)."""
        try:
            step()
        except Exception as e:  # (optuna.TrialPruned and Diverged included: the caller tells them apart)
            self.end(e)


def start(recipe: TrainRecipe, root: Path, out: str, features: Features, on_epoch=None, log=(), label=None) -> Member:
    """A run of the group up to its first epoch, as `train(recipe, root, out, features=...)` starts it."""
    m = Member(stack=contextlib.ExitStack(), on_epoch=on_epoch, started=time.time())

    def begin():
        run_dir = m.stack.enter_context(run_directory(recipe, out, False))
        callbacks = m.stack.enter_context(tracking.session(log, label))
        m.fit = CachedFit(recipe, root, run_dir, features)  # (it seeds torch and builds the head)
        m.fit.callbacks = callbacks
        slot = RngSlot(m.fit.device)  # the stream from here on is this run's alone
        m.fit.own_rng, m.fit.rng_state = slot, slot.checkpoint_state
        m.history, m.model = begin_fit(m.fit, False, None)

    m.attempt(begin)
    return m


def train_together(members: list[Member], workers: int) -> list:
    """Train the started `members` (start(); equal group_key) together, their steps on `workers` threads;
    each one's outcome, in order: its metrics {"epochs", "best"}, or the exception that ended it. Each
    run's validation, epoch records (checkpoints, metrics, the pruner) and closing files go to the
    threads too."""
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            epoch = 0
            while True:
                epoch += 1
                ending = [
                    m for m in live(members) if epoch > m.fit.recipe.optim.epochs or stopped_early(m.fit, m.history)
                ]
                list(pool.map(finish, ending))
                active = live(members)
                if not active:
                    break
                t0 = time.time()
                totals = train_pass(active, epoch, pool, workers)
                trained = time.time() - t0
                vals = list(pool.map(lambda m: validate(m.fit), active))
                list(pool.map(partial(record, epoch=epoch, t0=t0, trained=trained), active, totals, vals))
    except BaseException as e:  # (an interrupt, or a failure of the pass itself: it ends every run)
        for m in live(members):
            m.end(e)
        raise
    return [m.outcome for m in members]


def live(members: list[Member]) -> list[Member]:
    return [m for m in members if not m.done]


def finish(m: Member) -> None:
    """The run's last epoch is done: its closing files (loop.finish_run), and its end."""
    m.attempt(lambda: m.end(end_fit(m.fit, m.history, m.started)))


def record(m: Member, mine, val, epoch: int, t0: float, trained: float) -> None:
    """The epoch's record of one run (loop.end_epoch); an exception from it (the pruner's, a divergence)
    ends that run."""
    m.attempt(lambda: end_epoch(m.fit, m.history, epoch, mine, val, t0, trained, m.on_epoch))


class SharedPass:
    """One pass of batches shared by `readers` threads, each reading all of them in order at its own pace
    (no step in lockstep): a batch is drawn and gathered once, by the first reader to need it, and let go
    when the last reader has passed it; no reader makes a batch more than `ahead` in front of the slowest
    (the memory held: `ahead` batches)."""

    def __init__(self, batches, readers: int, ahead: int = 4):
        self.source, self.ahead = iter(batches), ahead
        self.kept: dict = {}  # batch number -> batch
        self.passed = [0] * readers  # batches each reader has taken
        self.made, self.making, self.over, self.error = 0, False, False, None
        self.cond = threading.Condition()

    def read(self, reader: int):
        while True:
            k, make = self.passed[reader], False
            with self.cond:
                while k >= self.made and not self.over and (self.making or k - min(self.passed) >= self.ahead):
                    self.cond.wait()
                if self.error is not None:
                    raise self.error
                if k >= self.made and self.over:
                    return
                make = k >= self.made
                self.making = self.making or make
            if make:  # (outside the lock: the others read what is made meanwhile)
                try:
                    batch = next(self.source, None)
                except BaseException as e:
                    with self.cond:
                        self.error, self.over, self.making = e, True, False
                        self.cond.notify_all()
                    raise
                with self.cond:
                    self.making = False
                    if batch is None:
                        self.over = True
                    else:
                        self.kept[self.made] = batch
                        self.made += 1
                    self.cond.notify_all()
                if batch is None:
                    return
            with self.cond:
                batch = self.kept[k]
                self.passed[reader] = k + 1
                for j in [j for j in self.kept if j < min(self.passed)]:
                    del self.kept[j]
                self.cond.notify_all()
            yield batch


def train_pass(active: list[Member], epoch: int, pool: ThreadPoolExecutor, workers: int) -> list:
    """One epoch's training of every active run over one pass of batches (SharedPass: each batch drawn and
    gathered once), the runs dealt to the pool's threads, each thread stepping its runs batch by batch;
    each run's EpochTotals, in order."""
    lead = active[0].fit
    optim = lead.recipe.optim
    batches = epoch_batches(
        lead.splits["train"], lead.image, lead.question, lead.rows, optim.batch_size, lead.recipe.seed, epoch
    )
    threads = max(1, min(len(active), workers))
    shared = SharedPass(batches, threads)
    dealt = deal(active, threads)
    done = pool.map(lambda t: train_runs(dealt[t], shared.read(t), epoch), range(threads))
    totals = {id(m): total for part, runs in zip(done, dealt) for m, total in zip(runs, part)}
    return [totals[id(m)] for m in active]


def deal(runs: list[Member], threads: int) -> list[list[Member]]:
    """The runs dealt to `threads` by their heads' sizes (a step's work), largest first to the least loaded."""
    hands: list[list[Member]] = [[] for _ in range(threads)]
    load = [0] * threads
    for m in sorted(runs, key=lambda m: -m.fit.config["head_parameters"]):
        t = load.index(min(load))
        hands[t].append(m)
        load[t] += m.fit.config["head_parameters"]
    return hands


def train_runs(runs: list[Member], batches, epoch: int) -> list:
    """One thread's share of a pass: its runs stepped on each batch in turn (loop.train_epoch's steps)."""
    tallies, steps = [], []
    for m in runs:
        m.model.train()
        m.fit.optimizer.zero_grad(set_to_none=True)
        tallies.append(m.fit.tally(m.fit.device))
        steps.append(StepLosses(m.fit.callbacks, (epoch - 1) * m.fit.batches_per_epoch + 1))
    for number, (idx, image, question) in enumerate(batches, 1):
        for m, tally, step in zip(runs, tallies, steps):
            loss, count, score = fit_batch(m.fit, m.model, idx, image, question, 1.0, True)
            tally.add(loss, count, number, score)
            step.add(loss, count, True)
    for step in steps:
        step.flush()
    return [tally.totals() for tally in tallies]
