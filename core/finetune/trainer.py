"""Hearth's training loop: packed rows, output-layer loss only where there are targets, checkpoints.

Runs inside the job process (imports torch). Progress goes out through ``emit`` as plain dicts.
"""

from __future__ import annotations

import math
import os
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.finetune.data.packing import IGNORE, PackedRows
from core.finetune.distributed import Dist
from core.finetune.losses import dpo_loss, token_nll
from core.finetune.methods.base import Prepared

Emit = Callable[[dict[str, Any]], None]
CHECK_TARGETS = 64  # targets compared between the fast and the plain loss before training


class Interrupted(Exception):
    """The job was asked to stop; a checkpoint was saved."""


@dataclass
class TrainSettings:
    objective: str  # "sft", "pretrain" or "dpo"
    epochs: float
    max_steps: int | None
    lr: float
    batch: int
    grad_accum: int
    seq_len: int
    gradient_checkpointing: bool
    bf16: bool
    seed: int = 0
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    save_every: int = 50
    save_minutes: float = 2.0  # also checkpoint when this much training time passed since the last save; 0: off
    eval_every: int = 0  # 0: a few times per run
    dpo_beta: float = 0.1
    schedule: str = "cosine"  # after warm-up: "cosine" (to a tenth) or "constant"


@dataclass
class TrainState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)  # held-out loss during training: step, eval_loss


def to_tensors(rows: PackedRows, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor(rows.input_ids, dtype=torch.long, device=device),
        "targets": torch.tensor(rows.targets, dtype=torch.long, device=device),
        "positions": torch.tensor(rows.positions, dtype=torch.long, device=device),
        "segments": torch.tensor(rows.segments, dtype=torch.long, device=device),
    }


def take(rows: dict[str, torch.Tensor], index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    """Rows ``index`` of ``rows``, cut after the last real token of the longest of them.

    Padding only ever sits at the end of a row (``pack``), and no real token attends to a later
    position, so the columns cut off change nothing but the time spent on them (a half-empty last row
    of a packed set, or the rows of a method that cannot pack).
    """
    batch = {k: v[index] for k, v in rows.items()}
    width = max(1, int((batch["segments"] >= 0).sum(1).max())) if batch["segments"].numel() else 1
    return {k: v[:, :width] for k, v in batch.items()}


class Trainer:
    def __init__(
        self, prepared: Prepared, settings: TrainSettings, train: PackedRows, held_out: PackedRows,
        *, device: torch.device, packing: bool, emit: Emit, should_stop: Callable[[], bool], checkpoint_dir: Path,
        dist: Dist | None = None, sharded: bool = False,
    ) -> None:
        self.p = prepared
        self.dist = dist or Dist()  # several processes: each takes its share of every step (core.finetune.distributed)
        # FSDP (core.finetune.sharding): every forward is a collective, so every rank runs every forward
        # (evaluation, samples, the knowledge check too) and the same number of them in each step.
        self.sharded = sharded and self.dist.enabled
        self.s = settings
        self.device = device
        self.packing = packing
        self.emit = emit
        self.should_stop = should_stop
        self.checkpoint_dir = checkpoint_dir
        self.train_rows = to_tensors(train, device)
        self.eval_rows = to_tensors(held_out, device) if len(held_out) else None
        self.n_train = len(train)
        self.train_phases: list[int] = list(getattr(train, "phases", []) or [])
        lm = prepared.causal_lm
        self.head = lm.get_output_embeddings()
        config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
        self.softcap = float(getattr(config, "final_logit_softcapping", None) or 0.0)
        self.compute_dtype = torch.bfloat16 if settings.bf16 else torch.float32
        self._head_lowp: torch.Tensor | None = None
        # Verified on the first batch. Sharded, the decoder and the output layer must run inside the root
        # module's forward (FSDP2 gathers the root's own weights, the output layer among them, in its hooks).
        self.fast = packing and not self.sharded
        self.schedule = self._schedule()
        self.total_steps = len(self.schedule)
        self._last_save = time.monotonic()  # reset when the loop starts (train) and after each checkpoint
        self.ref_logp: torch.Tensor | None = None
        # Asked after each step whether training has done enough (the knowledge check's held-out half says so).
        self.enough: Callable[[TrainState], bool] | None = None
        # A running average of the trained weights (``average_over``), None: off.
        self.average_decay = 0.0
        self._average: list[torch.Tensor] | None = None
        lean_lora_forward(prepared.model)

    def average_over(self, steps: int) -> None:
        """Keep an exponential moving average of the trained weights over about ``steps`` steps and end with it.

        With a constant learning rate and one short row per step, the weights after any one step lean towards
        the last few rows; their average over the last quarter pass answers the documents' questions more
        steadily (Polyak averaging; Izmailov et al., "Averaging Weights Leads to Wider Optima", arXiv
        1803.05407). Measured in bench/document_learning.py: about 2 more of 24 paraphrased questions right over
        the second pass. Not with FSDP sharding (each rank holds a slice)."""
        if not self.sharded and steps > 1:
            self.average_decay = 1.0 - 1.0 / steps

    def _update_average(self, params: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            if self._average is None:
                self._average = [p.detach().clone() for p in params]
                return
            for avg, p in zip(self._average, params, strict=True):
                avg.lerp_(p.detach(), 1.0 - self.average_decay)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (nothing changes when no average is kept)."""
        if self._average is None:
            yield
            return
        params = self.p.trainable_parameters()
        current = [p.detach().clone() for p in params]
        copy_weights(params, self._average)
        try:
            yield
        finally:
            copy_weights(params, current)

    # -- plan ----------------------------------------------------------------------------------
    def _schedule(self) -> list[list[list[int]]]:
        """Optimizer steps, each a list of micro-batches of row indices; fixed by the seed (resume replays it)."""
        steps: list[list[list[int]]] = []
        epochs = max(1, math.ceil(self.s.epochs))
        phases = self.train_phases or [self.n_train]
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(self.s.seed * 1000 + epoch)
            # Each phase's rows in a fresh order, the phases one after another (documents, then Q&A).
            order, start = [], 0
            for size in phases:
                order += [start + i for i in torch.randperm(size, generator=g).tolist()]
                start += size
            if epoch == epochs - 1 and self.s.epochs < epochs:
                order = order[: max(1, round(self.n_train * (self.s.epochs - epoch)))]
            micro = [order[i : i + self.s.batch] for i in range(0, len(order), self.s.batch)]
            steps += [micro[i : i + self.s.grad_accum] for i in range(0, len(micro), self.s.grad_accum)]
        if self.s.max_steps:
            while len(steps) < self.s.max_steps:  # keep cycling when steps are asked for explicitly
                steps += steps[: self.s.max_steps - len(steps)]
            steps = steps[: self.s.max_steps]
        return steps

    def lr_factor(self, step: int) -> float:
        warmup = max(1, round(self.total_steps * self.s.warmup_ratio))
        if step < warmup:
            return (step + 1) / warmup
        if self.s.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- forward -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.s.bf16)

    def _head_weight_lowp(self) -> torch.Tensor | None:
        w = self.head.weight
        if w.requires_grad or self.compute_dtype == w.dtype:
            return None
        if self._head_lowp is None:
            self._head_lowp = w.detach().to(self.compute_dtype)
        return self._head_lowp

    def token_nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of every targeted token in ``batch`` and the segment each belongs to."""
        targets = batch["targets"]
        mask = targets != IGNORE
        if self.fast:
            decoder = self.p.causal_lm.get_decoder()
            with self._autocast():
                hidden = decoder(
                    input_ids=batch["input_ids"], position_ids=batch["positions"], attention_mask=None, use_cache=False
                ).last_hidden_state
            nll = token_nll(hidden[mask], self.head.weight, targets[mask], softcap=self.softcap,
                            compute_dtype=self.compute_dtype, weight_lowp=self._head_weight_lowp())
        else:
            if self.sharded and self.packing:
                # Packed rows, as the fast path runs them: positions restart per example, so the model masks
                # each example off from the others (transformers' packed-sequence detection).
                inputs = {"position_ids": batch["positions"], "attention_mask": None}
            else:
                inputs = {"attention_mask": (batch["segments"] >= 0).long()}
            with self._autocast():
                logits = self.p.model(input_ids=batch["input_ids"], use_cache=False, **inputs).logits
            logits = logits[:, -targets.shape[1] :].float()
            nll = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="none")
        return nll, batch["segments"][mask]

    def _check_fast_path(self, batch: dict[str, torch.Tensor]) -> None:
        """Compare the fast loss with the model's own logits on one row; use the plain path if they differ."""
        if not self.fast:
            return
        # The first example of the first row, up to its CHECK_TARGETS-th target: the plain path runs the
        # row as one sequence (it would let packed examples see each other) and keeps full logits
        # (positions x vocabulary floats), so a short single-example prefix keeps it exact and small.
        segments, targets = batch["segments"][0], batch["targets"][0]
        width = int((segments == segments[0]).long().cumprod(0).sum())
        hits = (targets[:width] != IGNORE).nonzero().flatten()
        if len(hits):
            width = int(hits[min(len(hits), CHECK_TARGETS) - 1]) + 1
        one = {k: v[:1, :width] for k, v in batch.items()}
        with torch.no_grad():
            fast, _ = self.token_nll(one)
            self.fast = False
            plain, _ = self.token_nll(one)
        tolerance = 0.05 if self.s.bf16 else 1e-3
        if fast.numel() and float((fast.mean() - plain.mean()).abs()) <= tolerance * max(1.0, float(plain.mean())):
            self.fast = True
        else:
            self.emit({"event": "warning", "message": "This model's output layer needs the plain loss path (slower)."})

    def segment_logp(self, batch: dict[str, torch.Tensor], n_segments: int) -> torch.Tensor:
        nll, seg = self.token_nll(batch)
        return torch.zeros(n_segments, device=nll.device).index_add(0, seg, -nll)

    # -- DPO reference -------------------------------------------------------------------------
    def compute_reference(self, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        n_segments = int(rows["segments"].max()) + 1
        out = torch.zeros(n_segments, device=self.device)
        ctx = self.p.reference() if self.p.has_reference else nullcontext()
        if self.dist.enabled and not self.sharded:  # each rank scores its share of the rows; the pairs' sums add up
            mine = self.dist.share(range(rows["input_ids"].shape[0]))
            rows = {k: v[mine[0] : mine[-1] + 1] for k, v in rows.items()} if mine else {k: v[:0] for k, v in rows.items()}
        with torch.no_grad(), ctx:
            for part in self.batches(rows):
                out += self.segment_logp(part, n_segments)
        # Sharded, every rank scored every row (the forwards are collectives): nothing to add up.
        return out if self.sharded else self.dist.all_reduce(out)

    def batches(self, rows: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """``rows`` in micro-batches of ``batch`` rows, each trimmed of trailing padding (``take``)."""
        for i in range(0, rows["input_ids"].shape[0], self.s.batch):
            yield take(rows, slice(i, i + self.s.batch))

    # -- loop ----------------------------------------------------------------------------------
    def train(self, optimizer: torch.optim.Optimizer, state: TrainState) -> TrainState:
        model = self.p.model
        if self.s.gradient_checkpointing:
            self.p.causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["initial_lr"] = lr
        params = self.p.trainable_parameters()
        first = take(self.train_rows, torch.tensor(self.schedule[0][0]))
        self._check_fast_path(first)
        if self.s.objective == "dpo":
            self.ref_logp = self.compute_reference(self.train_rows)
        eval_every = self.s.eval_every or max(10, self.total_steps // 4)
        model.train()
        rate: list[tuple[int, float]] = []
        start_time = time.monotonic()
        self._last_save = start_time  # the clock of save_minutes: since training (re)started or the last save
        while state.step < self.total_steps:
            t0 = time.monotonic()
            micro_batches = self.schedule[state.step]
            factor = self.lr_factor(state.step)
            for g in optimizer.param_groups:
                g["lr"] = g["initial_lr"] * factor
            loss_value, tokens, stop_asked, due_asked = self._accumulate(micro_batches)
            if self.s.max_grad_norm and self.sharded:
                from core.finetune.sharding import clip_grad_norm

                clip_grad_norm(params, self.s.max_grad_norm)
            elif self.s.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.s.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.p.after_step()
            state.step += 1
            if self.average_decay:
                self._update_average(params)
            elapsed = time.monotonic() - t0
            rate = [*rate[-9:], (tokens, elapsed)]
            tps = sum(t for t, _ in rate) / max(1e-9, sum(e for _, e in rate))
            step_s = sum(e for _, e in rate) / len(rate)
            event = {
                "event": "step", "step": state.step, "total_steps": self.total_steps, "loss": round(loss_value, 5),
                "lr": optimizer.param_groups[0]["lr"], "tokens_per_s": round(tps, 1),
                "eta_s": round(step_s * (self.total_steps - state.step), 1),
                "elapsed_s": round(time.monotonic() - start_time, 1),
            }
            state.history.append({"step": state.step, "loss": event["loss"]})
            self.emit(event)
            if self.eval_rows is not None and state.step % eval_every == 0 and state.step < self.total_steps:
                if self.dist.main or self.sharded:  # rank 0 measures (sharded: all take part); the others wait
                    measured = self.evaluate()
                    state.evals.append({"step": state.step, "eval_loss": measured["eval_loss"]})
                    self.emit({"event": "eval", "step": state.step, **measured})
                self.dist.barrier()
                model.train()
            # Alone, the stop request and the clock are read here; among several, rank 0's answers came with
            # the step's sum, so every rank saves (and stops) at the same step.
            stop = self.should_stop() if not self.dist.enabled else stop_asked
            due = self._save_due() if not self.dist.enabled else due_asked
            by_steps = bool(self.s.save_every) and state.step % self.s.save_every == 0
            if stop or ((by_steps or due) and state.step < self.total_steps):
                if self.dist.main or self.sharded:  # sharded: every rank gathers, rank 0 writes
                    self.save_checkpoint(optimizer, state)
                self.dist.barrier()
                self._last_save = time.monotonic()
            if stop:
                self.emit({"event": "stopping", "message": f"stopping at step {state.step}: checkpoint saved"})
                raise Interrupted(f"stopped at step {state.step}")
            if self.enough is not None and self.enough(state):  # one process only (set by the job)
                break
        model.eval()
        if self._average is not None:  # the run ends with the averaged weights
            copy_weights(params, self._average)
        return state

    def _save_due(self) -> bool:
        """Whether ``save_minutes`` of training passed since the last checkpoint (or since training started)."""
        return bool(self.s.save_minutes) and time.monotonic() - self._last_save >= self.s.save_minutes * 60

    def _accumulate(self, micro_batches: list[list[int]]) -> tuple[float, int, bool, bool]:
        """Gradients of one optimizer step's loss; returns the loss, its tokens and (several ranks) rank 0's stop
        request and whether rank 0's clock says a checkpoint is due (``_save_due``).

        Both losses are normalised by the whole step (its trained tokens, its preference pairs), not by
        micro-batch, so the rows can be shared out among ranks (``Dist.share``) and the summed gradients
        are exactly those of one process.
        """
        everything = [torch.tensor(m, device=self.device) for m in micro_batches]
        tokens = sum(int((self.train_rows["segments"][r] >= 0).sum()) for r in everything)
        rows = everything
        idle = 0
        if self.dist.enabled:
            step_rows = [i for m in micro_batches for i in m]
            mine = self.dist.share(step_rows)
            rows = [torch.tensor(mine[i : i + self.s.batch], device=self.device)
                    for i in range(0, len(mine), self.s.batch)]
            if self.sharded:
                # Every rank must run as many forwards and backwards as rank 0 (the largest share), or FSDP's
                # collectives wait forever: the missing ones are idle passes that add nothing.
                largest = Dist(rank=0, world=self.dist.world).share(step_rows)
                idle = -(-len(largest) // self.s.batch) - len(rows)
        total_loss = 0.0
        if self.s.objective == "dpo":
            assert self.ref_logp is not None
            n_segments = self.ref_logp.shape[0]
            step_segments = torch.cat([self.train_rows["segments"][r].reshape(-1) for r in everything])
            n_pairs = int((torch.unique(step_segments[step_segments >= 0]) % 2 == 0).sum())
            for r in rows:
                batch = take(self.train_rows, r)
                logp = self.segment_logp(batch, n_segments)
                present = torch.unique(batch["segments"][batch["segments"] >= 0])
                chosen = present[present % 2 == 0]
                losses, _ = dpo_loss(logp[chosen], logp[chosen + 1], self.ref_logp[chosen],
                                     self.ref_logp[chosen + 1], self.s.dpo_beta)
                loss = losses.sum() / max(1, n_pairs)
                loss.backward()  # type: ignore[no-untyped-call]
                total_loss += float(loss.detach())
            self._idle_passes(idle, everything[0])
        else:
            n_trained = sum(int((self.train_rows["targets"][r] != IGNORE).sum()) for r in everything)
            for r in rows:
                batch = take(self.train_rows, r)
                nll, _ = self.token_nll(batch)
                loss = nll.sum() / max(1, n_trained)
                loss.backward()  # type: ignore[no-untyped-call]
                total_loss += float(loss.detach())
            self._idle_passes(idle, everything[0])
        if not self.dist.enabled:
            return total_loss, tokens, False, False
        # One collective: the gradients, the step's loss and rank 0's stop request and checkpoint clock (so all
        # stop together and save at the same step: the ranks' clocks differ, a sharded save is a collective).
        # Sharded, FSDP reduced its parameters' gradients in the backward: only the others are summed here.
        asked = 1.0 if self.dist.main and self.should_stop() else 0.0
        due = 1.0 if self.dist.main and self._save_due() else 0.0
        params = self.p.trainable_parameters()
        if self.sharded:
            from core.finetune.sharding import is_sharded

            params = [p for p in params if not is_sharded(p)]
        total_loss, stop, due = self.dist.all_reduce_grads(params, [total_loss, asked, due])
        return total_loss, tokens, stop > 0, due > 0

    def _idle_passes(self, count: int, rows: torch.Tensor) -> None:
        """``count`` forward and backward passes that change no gradient: a few tokens of a row of the step, loss
        times zero. A sharded rank with fewer rows than rank 0 runs them so FSDP's collectives pair up."""
        for _ in range(count):
            batch = {k: v[:, :8] for k, v in take(self.train_rows, rows[:1]).items()}
            nll, _ = self.token_nll(batch)
            (nll.sum() * 0.0).backward()  # type: ignore[no-untyped-call]

    def evaluate(self, *, reference: bool = False) -> dict[str, float]:
        """Held-out loss (mean NLL per trained token) and perplexity; DPO adds its loss and accuracy."""
        assert self.eval_rows is not None
        rows = self.eval_rows
        self.p.model.eval()
        total, count = 0.0, 0
        n_segments = int(rows["segments"].max()) + 1
        logp = torch.zeros(n_segments, device=self.device)
        ctx = self.p.reference() if reference and self.p.has_reference else nullcontext()
        with torch.no_grad(), ctx:
            for part in self.batches(rows):
                nll, seg = self.token_nll(part)
                keep = seg % 2 == 0 if self.s.objective == "dpo" else torch.ones_like(seg, dtype=torch.bool)
                total += float(nll[keep].sum())
                count += int(keep.sum())
                logp.index_add_(0, seg, -nll)
        loss = total / max(1, count)
        out = {"eval_loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50.0)), 3)}
        if self.s.objective == "dpo":
            out["segment_logp"] = logp  # type: ignore[assignment]
        return out

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, optimizer: torch.optim.Optimizer, state: TrainState, extra: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint (rank 0). Sharded, every rank calls it: the weights and the optimizer's state are
        gathered whole (collectives), so the checkpoint is the same as one process's, keyed by name."""
        path = self.checkpoint_dir / "state.pt"
        if self.sharded:
            from core.finetune.sharding import checkpoint_state

            trainable, optim = checkpoint_state(self.p.model, optimizer, main=self.dist.main)
            if not self.dist.main:
                return path
        else:
            trainable, optim = self.p.trainable_state(), optimizer.state_dict()
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({
            "step": state.step, "history": state.history, "evals": state.evals, "trainable": trainable,
            "optimizer": optim, "method": self.p.extra_state(), "rng": torch.get_rng_state(),
            "sharded": self.sharded, "average": self._average, **(extra or {}),
        }, tmp)
        os.replace(tmp, path)
        self.emit({"event": "checkpoint", "step": state.step})
        return path

    def load_checkpoint(self, optimizer: torch.optim.Optimizer) -> tuple[TrainState, dict[str, Any]]:
        if self.dist.enabled:
            # Rank 0 reads the checkpoint (other machines have none on their disks) and hands it to all.
            data = self.dist.broadcast(torch.load(self.checkpoint_dir / "state.pt", map_location="cpu", weights_only=False)
                                       if self.dist.main else None)
        else:
            data = torch.load(self.checkpoint_dir / "state.pt", map_location=self.device, weights_only=False)
        if bool(data.get("sharded")) != self.sharded:
            from core.errors import TrainingError

            raise TrainingError("This checkpoint was saved " + ("with" if data.get("sharded") else "without")
                                + " FSDP sharding: resume it the way it was started (the same accelerate config, or "
                                "hearth finetune --resume without it).")
        if self.sharded:
            from core.finetune.sharding import load_checkpoint_state

            load_checkpoint_state(self.p.model, optimizer, data["trainable"], data["optimizer"])
        else:
            self.p.load_trainable_state(data["trainable"])
            optimizer.load_state_dict(data["optimizer"])
        self.p.load_extra_state(data["method"])
        if data.get("average") is not None:
            self._average = [a.to(self.device) for a in data["average"]]
        torch.set_rng_state(data["rng"])
        state = TrainState(step=int(data["step"]), history=list(data["history"]), evals=list(data.get("evals", [])))
        return state, data


def copy_weights(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    """Put ``values`` into the trained weights ``params`` in place (the same order and shapes)."""
    with torch.no_grad():
        for param, value in zip(params, values, strict=True):
            param.copy_(value)


def lean_lora_forward(model: torch.nn.Module) -> int:
    """Give peft's plain LoRA linear layers a leaner forward with the same result; returns how many.

    peft computes ``base(x) + B(A(dropout(x.float()))) * scale``: under bf16 autocast the float copy of
    ``x`` is cast straight back to bf16 (a round trip that changes nothing but costs two passes over the
    activations, forward and backward), and the scale multiplies ``out_features`` values per token.
    Here ``x`` stays as it is and the scale multiplies the ``rank`` values of ``A x`` (the same product).
    Anything unusual (adapter off or merged, several adapters, DoRA-style variants, mixed batches) goes
    to peft's own forward.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a training dependency
        return 0
    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:  # exact type: subclasses may compute something else
            setattr(module, "forward", types.MethodType(_lean_lora_linear, module))  # noqa: B010
            count += 1
    return count


def _lean_lora_linear(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    plain = (
        not args and not kwargs and not self.disable_adapters and not self.merged and name is not None
        and name in self.lora_A and name not in self.lora_variant
    )
    if plain and x.dtype != self.lora_A[name].weight.dtype and not torch.is_autocast_enabled(x.device.type):
        plain = False  # without autocast the input must be cast for the adapter's dtype: peft does that
    if not plain:
        out: torch.Tensor = type(self).forward(self, x, *args, **kwargs)
        return out
    result: torch.Tensor = self.base_layer(x)
    update: torch.Tensor = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](x)) * self.scaling[name])
    return (result + update).to(result.dtype)
