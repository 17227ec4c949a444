"""Fine-tuning with sentence-transformers' trainer: checkpointed, bounded in steps and minutes, resumable.

A training of one version works in its work folder (:func:`storage.models.work_dir`): the trainer writes a
checkpoint every ``checkpoint_steps`` (model, optimiser, scheduler, RNG states; the last one kept) and
:data:`CLOCK` records the training seconds spent up to it. A killed run is resumed by running the same
training again: the trainer restores the last checkpoint and the data order, and the clock goes on from
its seconds, so ``max_minutes`` bounds the training across runs as ``max_steps`` does.

Losses:

- ``mnrl``: ``MultipleNegativesRankingLoss`` (InfoNCE over in-batch and hard negatives, scale 20), with
  batches that never hold one text twice (a repeated passage would be its own in-batch negative);
- ``listwise``: ListNet over the judge's grades, as ``DistillKLDivLoss`` computes it: the KL divergence from
  the softmax of the grades to the softmax of the cosine scores differs from ListNet's cross-entropy by the
  grades' entropy, a constant, so the gradients are ListNet's (sentence-transformers 6.2 has list-wise
  losses for cross-encoders only).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.adapt.examples import AdaptConfig

log = logging.getLogger(__name__)

CLOCK = "clock.json"  # training seconds spent up to each checkpoint: {"<step>": seconds}
CHECKPOINTS = "checkpoints"
LISTWISE_STUDENT_TEMPERATURE = 0.05  # cosine scores in [-1, 1] spread like MNRL's scale of 20
LISTWISE_TEACHER_TEMPERATURE = 0.5  # grade 2 over grade 0: e^4, one grade: e^2

StepProgress = Callable[[int, int], None]  # (steps done, max steps)


@dataclass
class TrainOutcome:
    """How far a training got: steps in all, seconds in all, why it stopped, and the losses it logged."""

    steps: int
    seconds: float
    stopped: str  # max-steps | max-minutes
    resumed_from: int | None  # the checkpoint step this run started from; None: from the base model
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean training loss)


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint in ``work``; ``None`` when there is none yet."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = work / CHECKPOINTS
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def train(
    model: Any,
    columns: dict[str, list[Any]],
    config: AdaptConfig,
    work: Path,
    *,
    device: str | None = None,
    progress: StepProgress | None = None,
) -> TrainOutcome:
    """Fine-tune ``model`` (a ``SentenceTransformer``, changed in place) on ``columns``.

    Starts from the last checkpoint in ``work`` if there is one, and runs until ``config.max_steps`` or
    ``config.max_minutes``; ``progress`` gets (steps done, max steps) after every step.
    """
    from datasets import Dataset
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        DistillKLDivLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.util import pairwise_cos_sim
    from transformers import PrinterCallback, TrainerCallback

    os.environ.setdefault("WANDB_DISABLED", "true")
    model.model_card_data.generate_widget_examples = False  # a progress bar in the CLI, for a hub widget
    resume = last_checkpoint(work)
    clock = _read_clock(work)
    # A kill between a checkpoint and its clock entry leaves the entry before it: the nearest one counts.
    step = _step_of(resume) or 0
    spent_before = max((s for k, s in clock.items() if int(k) <= step), default=0.0) if resume else 0.0
    outcome = TrainOutcome(0, spent_before, "max-steps", _step_of(resume))
    started = time.monotonic()

    class Bounds(TrainerCallback):  # type: ignore[misc]
        """Stops at the time bound (saving a checkpoint), keeps the clock and the losses."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            spent = spent_before + time.monotonic() - started
            if config.max_minutes is not None and spent >= config.max_minutes * 60:
                outcome.stopped = "max-minutes"
                control.should_training_stop = control.should_save = True
            if progress is not None:
                progress(state.global_step, config.max_steps)
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            clock[str(state.global_step)] = spent_before + time.monotonic() - started
            _write_clock(work, clock)
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
            if logs and "loss" in logs:
                outcome.losses.append((state.global_step, float(logs["loss"])))
            return control

    if config.loss == "mnrl":
        loss: Any = MultipleNegativesRankingLoss(model)
        sampler = BatchSamplers.NO_DUPLICATES
    else:
        loss = DistillKLDivLoss(
            model,
            similarity_fct=pairwise_cos_sim,
            student_temperature=LISTWISE_STUDENT_TEMPERATURE,
            teacher_temperature=LISTWISE_TEACHER_TEMPERATURE,
        )
        sampler = BatchSamplers.BATCH_SAMPLER
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / CHECKPOINTS),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=max(1, config.max_steps // 10),
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=sampler,
        save_strategy="steps",
        save_steps=config.checkpoint_steps,
        save_total_limit=1,
        logging_steps=max(1, min(10, config.max_steps // 10)),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=device == "cpu",
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(columns),
        loss=loss,
        callbacks=[Bounds()],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the losses go to the report instead
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    outcome.steps = int(result.global_step)
    outcome.seconds = spent_before + time.monotonic() - started
    log.info("adapt: %s steps in %.1f s (%s)", outcome.steps, outcome.seconds, outcome.stopped)
    return outcome


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else None


def _read_clock(work: Path) -> dict[str, float]:
    path = work / CLOCK
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_clock(work: Path, clock: dict[str, float]) -> None:
    """Written beside the checkpoints, renamed into place so a kill never leaves half a file."""
    staged = work / f"{CLOCK}.tmp"
    staged.write_text(json.dumps(clock), encoding="utf-8")
    staged.replace(work / CLOCK)
