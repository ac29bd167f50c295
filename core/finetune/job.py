"""The fine-tuning job: runs in its own process (``python -m core.jobs finetune SPEC.json``).

Order of work: cheap checks first (data readable, base trainable, memory enough), then the model,
then training with checkpoints, then evaluation before vs after, then the adapter folder renamed
into the library. A failure before training removes the work folder; a cancel or a crash during
training keeps it (with its checkpoint) for ``--resume``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import TrainingError
from core.finetune import adapters, knowledge, planner
from core.finetune.base_model import BaseModel, check_trainable, load_for_training, resolve_base, sha256_of
from core.finetune.data.formatting import ExampleEncoder
from core.finetune.dataset import PreparedData, build, read_sources
from core.finetune.distributed import Dist, model_fingerprint
from core.finetune.knowledge import summary_line
from core.finetune.methods import build_config, get_method
from core.finetune.resources import Plan, pick_device, plan
from core.finetune.spec import FinetuneSpec

if TYPE_CHECKING:  # torch comes in only once a job runs (in its own process)
    from core.finetune.trainer import Trainer, TrainSettings, TrainState

Emit = Callable[[dict[str, Any]], None]
EXIT_CANCELLED = 130
NEVER = 1 << 30


def run(spec_data: dict[str, Any], emit: Emit, should_stop: Callable[[], bool], dist: Dist | None = None) -> int:
    """Run one job; returns the process exit code (0 done, 130 cancelled). Errors raise.

    ``dist``: this process's place among several (``core.finetune.distributed``); rank 0 does all the
    talking, measuring and saving, and hands the others what they must agree on (spec, plan, data).
    """
    import torch

    from core.finetune.methods.base import PrepareContext
    from core.finetune.trainer import Interrupted, Trainer, TrainSettings, TrainState

    spec = FinetuneSpec.from_dict(spec_data)
    spec.check()
    dist = dist or Dist()
    if dist.enabled:
        dist = dist.init(pick_device(spec.device)[0])
        if not dist.main:
            emit = _silent
    method = get_method(spec.method)
    shard = _shard_settings(dist, method)
    method_config = build_config(method, spec.method_options)
    final = adapters.adapter_folder(spec.name)
    work = adapters.partial_folder(spec.name)
    checkpoint_dir = work / "checkpoint"
    spec, resuming = dist.broadcast(_resolve_resume(spec, spec_data, work, emit) if dist.main else None)
    started = time.time()
    keep_work = resuming  # a resume that fails keeps the checkpoint it could not continue from
    try:
        emit({"event": "stage", "stage": "check", "message": "checking the data and the base model"})
        # Rank 0 reads the data and hands the prepared rows to the others: they need only the base model.
        sources = read_sources(spec) if dist.main else None
        base = resolve_base(spec.base)
        check_trainable(base)
        device, bf16 = pick_device(spec.device)
        four_bit = False
        if method.wants_4bit:
            from core.finetune.methods.qlora import four_bit_available

            reason = four_bit_available(device)
            four_bit = reason is None
            if reason:
                emit({"event": "warning", "message": f"QLoRA: {reason}; training LoRA over the 16/32-bit base instead."})
        # Sharded on GPUs, each holds 1/world of the weights and trained state; on the CPU every process of this
        # machine loads a whole copy into the same RAM (the plan is rank 0's, made for all of them).
        shards = dist.world if shard is not None and device != "cpu" else 1
        copies = dist.local_world if device == "cpu" else 1
        documents, resources = dist.broadcast(
            _plan_job(spec, sources, method, base, device, bf16, four_bit, shards=shards, copies=copies)
            if sources is not None else None)
        emit({"event": "plan", **resources.to_dict()})
        if dist.main:
            work.mkdir(parents=True, exist_ok=True)
            (work / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1), encoding="utf-8")

        emit({"event": "stage", "stage": "model", "message": f"loading {base.name} for training"})
        torch.manual_seed(spec.seed)
        if device == "cpu":  # the machine's cores shared among its processes
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.local_world))
        where = dist.device(device)
        weight_dtype = torch.float32 if resources.weight_bytes_per_param == 4 else torch.bfloat16
        # Sharded, the model is loaded in RAM and each layer goes to the GPU as FSDP shards it (its
        # fully_shard moves a unit's weights to the mesh's device): the whole model never sits on one GPU.
        load_on = torch.device("cpu") if shard is not None else where
        model, tokenizer, folder = load_for_training(base, dtype=weight_dtype, device=load_on, four_bit=four_bit)
        encoder = ExampleEncoder(tokenizer, _chat_format(base, tokenizer))
        emit({"event": "stage", "stage": "data", "message": "preparing the training data"})
        def replay() -> list[str]:
            from core.finetune.data.views.replay import write_replay, write_replay_gguf

            if base.kind == "gguf":
                return write_replay_gguf(str(base.path), seed=spec.seed)
            return write_replay(model, tokenizer, load_on, seed=spec.seed)

        data = dist.broadcast(_data(work, sources, spec, encoder, resources, tokenizer, method.packing, emit, replay)
                              if dist.main else None)
        emit({"event": "data", **{k: v for k, v in data.summary.items() if k != "documents"}})

        # The cores of the whole machine, as one process would count them: the schedule must not depend on N.
        cores = (os.cpu_count() or 1) if device == "cpu" else 64
        sched = dist.broadcast(planner.schedule(
            documents=documents, rows=len(data.train), tokens=data.train.n_tokens,
            rows_per_step=resources.batch * resources.grad_accum, method_lr=method.default_lr,
            parameters=base.parameters, cores=cores, epochs=spec.epochs, max_steps=spec.max_steps, lr=spec.lr,
            views=bool(data.summary.get("views")), held_out=bool(data.restated) and not dist.enabled))
        ctx = PrepareContext(lr=sched.lr, weight_decay=0.0, device=load_on,
                             model_type=str(model.config.model_type), parameters=base.parameters,
                             tokenizer_path=str(folder))
        prepared = method.prepare(model, method_config, ctx)
        for param in prepared.trainable_parameters():
            if param.dtype != torch.float32:
                param.data = param.data.float()  # trained weights stay fp32 (16-bit loses small updates)
        for note in prepared.notes:
            emit({"event": "warning", "message": note})
        n_trainable = sum(p.numel() for p in prepared.trainable_parameters())
        # Ranks on other machines load the base from their own disks: make sure it is the same model, and
        # start every rank from rank 0's trainable weights (DDP does the same when it wraps a model).
        dist.check_same(model_fingerprint(prepared.model), "base model")
        dist.sync_parameters(prepared.trainable_parameters())
        if shard is not None:
            # After the method's weights exist and before the optimizer sees them (it must hold the shards).
            from core.finetune.sharding import shard_model

            shard_model(prepared.model, shard)
        settings = TrainSettings(
            objective=data.summary["objective"], epochs=sched.epochs, max_steps=sched.max_steps, lr=ctx.lr,
            batch=resources.batch, grad_accum=resources.grad_accum, seq_len=resources.seq_len,
            gradient_checkpointing=resources.gradient_checkpointing or bool(shard and shard.activation_checkpointing),
            bf16=resources.bf16, seed=spec.seed,
            save_every=spec.save_every, save_minutes=spec.save_minutes, dpo_beta=spec.dpo_beta,
            # Documents have no held-out text: evaluating the training text mid-run would only cost time.
            eval_every=spec.eval_every or (NEVER if documents else 0), schedule=sched.lr_schedule,
        )
        trainer = Trainer(prepared, settings, data.train, data.held_out, device=where, packing=method.packing,
                          emit=emit, should_stop=should_stop, checkpoint_dir=checkpoint_dir, dist=dist,
                          sharded=shard is not None)
        optimizer = prepared.make_optimizer()
        stopper = None
        if sched.stop_checks_from is not None and data.restated:
            per_epoch = max(1, round(trainer.total_steps / sched.epochs))
            trainer.average_over(max(10, per_epoch // 4))  # the checks and the result read the averaged weights
            stopper = knowledge.HeldOutStop(trainer, encoder, data.restated, first=round(per_epoch * sched.stop_checks_from),
                                            every=per_epoch // planner.STOP_CHECKS_PER_EPOCH, emit=emit)
            trainer.enough = stopper
        seen_rows = sum(len(m) for step in trainer.schedule for m in step)
        seen_tokens = int(data.train.n_tokens / max(1, len(data.train)) * seen_rows)
        seen_trained = int(data.train.n_trained / max(1, len(data.train)) * seen_rows)
        estimate = planner.estimated_seconds(total_tokens=seen_tokens, parameters=base.parameters, cores=cores,
                                             documents=documents)
        emit({"event": "settings", "method": method.name, "objective": settings.objective, "lr": settings.lr,
              "epochs": settings.epochs, "total_steps": trainer.total_steps, "trainable_parameters": n_trainable,
              "batch": settings.batch, "grad_accum": settings.grad_accum, "seq_len": settings.seq_len,
              "gradient_checkpointing": settings.gradient_checkpointing, "bf16": settings.bf16, "device": device,
              "tokens_to_train": seen_tokens, "trained_tokens": seen_trained, "estimated_train_s": round(estimate, 1), "reasons": sched.reasons,
              "processes": dist.world, "sharded": shard is not None, "stops_early": stopper is not None})

        if resuming:
            state, saved_state = trainer.load_checkpoint(optimizer)
            before = saved_state["before"]
            emit({"event": "resumed", "step": state.step, "total_steps": trainer.total_steps})
        else:
            before = {}
            if dist.main or shard is not None:  # the others wait at the barrier (sharded: all take part)
                emit({"event": "stage", "stage": "eval", "message": "measuring the base model"
                      + (" and checking what it knows of the documents" if data.probes else " on held-out data")})
                before = _measure(trainer, data, encoder, spec, reference=True)
                if "knowledge" in before:
                    emit({"event": "knowledge", "phase": "before", **_public(before["knowledge"])})
            dist.barrier()
            state = TrainState()
        keep_work = True  # from here a checkpoint may exist: keep the folder for --resume
        emit({"event": "stage", "stage": "train", "message": f"training {trainer.total_steps} steps"})
        original_save = trainer.save_checkpoint
        trainer.save_checkpoint = (  # type: ignore[method-assign,assignment]
            lambda optimizer, state, extra=None: original_save(optimizer, state, {"before": before})
        )
        try:
            state = trainer.train(optimizer, state)
        except Interrupted:
            emit({"event": "cancelled", "step": state.step, "message": f"Stopped at step {state.step}; "
                  f"continue with --resume --out {spec.name}."})
            return EXIT_CANCELLED
        if stopper is not None and (best := stopper.restore()) is not None:
            emit({"event": "stage", "stage": "train", "message": f"keeping the model of step {best}"})
        if not dist.main and shard is None:
            return 0  # rank 0 measures and saves; this process's memory and cores are better given back now
        emit({"event": "stage", "stage": "eval", "message": "measuring the tuned model"
              + (" and checking what it learned" if data.probes else " on held-out data")})
        after = _measure(trainer, data, encoder, spec, reference=False)
        emit({"event": "eval", "step": state.step, "eval_loss": after["eval_loss"], "perplexity": after["perplexity"]})
        if "knowledge" in after:
            restated = _restated_counts(before, after)
            emit({"event": "knowledge", "phase": "after", **_public(after["knowledge"]),
                  "before": before["knowledge"]["correct"], "after": after["knowledge"]["correct"],
                  **({"restated": restated} if restated else {}),
                  "message": summary_line(before["knowledge"]["correct"], after["knowledge"]["correct"],
                                          after["knowledge"]["total"], restated)})
        overfit = overfitting_warning(state.evals, after["eval_loss"])
        if overfit:
            emit({"event": "warning", "message": overfit})

        emit({"event": "stage", "stage": "save", "message": "saving the adapter"})
        result = work / "result"
        if dist.main:
            shutil.rmtree(result, ignore_errors=True)
            result.mkdir()
        if shard is not None:
            from core.finetune.sharding import save_prepared

            # The weights gathered whole (every rank takes part), written by rank 0 as one process would.
            save_prepared(prepared, result, main=dist.main, whole_model=method.output == "model")
            if not dist.main:
                return 0
        else:
            prepared.save(result)
        if method.output == "model":
            tokenizer.save_pretrained(str(result))
        emit({"event": "stage", "stage": "hash", "message": "computing the base model's checksum"})
        manifest = _manifest(spec, base, method.name, method_config, settings, data, resources, trainer, state,
                             before, after, started, n_trainable, method.output, processes=dist.world)
        manifest["hyperparameters"]["steps_trained"] = state.step
        if stopper is not None:
            manifest["metrics"]["held_out_checks"] = stopper.history
        if spec.docs and spec.index:  # tune + index: the documents also go into a Knowledge collection
            from core.finetune.indexing import index_for_job

            if (collection := index_for_job(spec.name, spec.docs, emit)) is not None:
                manifest["collection"] = collection
        (result / adapters.MANIFEST).write_text(json.dumps(manifest, indent=1, default=str), encoding="utf-8")
        adapters.ensure_free(spec.name)
        os.replace(result, final)
        shutil.rmtree(work, ignore_errors=True)
        emit({"event": "done", "name": spec.name, "path": str(final), "metrics": manifest["metrics"]})
        return 0
    except BaseException:
        if not keep_work and dist.main:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _silent(_event: dict[str, Any]) -> None:
    """The events of ranks other than 0: nobody hears them (rank 0 speaks for all)."""


# Methods whose result this job cannot gather from FSDP shards: Delta-LoRA writes the frozen weights after every
# step (sharded, each rank holds only its rows of them) and saves from them.
NOT_SHARDABLE = {"delta-lora": "it updates the frozen weights after every step, which FSDP holds in shards"}


def _shard_settings(dist: Dist, method: Any) -> Any:
    """The FSDP settings when the launcher asked to shard (``accelerate launch`` with an FSDP config), else None."""
    from core.finetune.sharding import fsdp_requested, settings_from_env

    if not dist.enabled or not fsdp_requested():
        return None
    if method.wants_4bit:
        from core.finetune.launchers import check_qlora_fsdp

        check_qlora_fsdp(method.name, True)
    if method.name in NOT_SHARDABLE:
        raise TrainingError(f"{method.name} cannot be sharded with FSDP ({NOT_SHARDABLE[method.name]}): use --method "
                            "lora, or train on GPUs the model fits (DDP).")
    return settings_from_env()


def _resolve_resume(spec: FinetuneSpec, spec_data: dict[str, Any], work: Path, emit: Emit) -> tuple[FinetuneSpec, bool]:
    """The spec to run and whether it continues a checkpoint; a fresh start clears the work folder."""
    resuming = spec.resume and (work / "checkpoint" / "state.pt").exists()
    if spec.resume and not resuming:
        emit({"event": "warning", "message": f"No checkpoint of '{spec.name}' to resume from: starting afresh."})
    adapters.ensure_free(spec.name)
    if resuming:
        saved = json.loads((work / "spec.json").read_text(encoding="utf-8"))
        for key in ("base", "method", "method_options", "docs", "data", "objective"):
            if saved.get(key) != spec_data.get(key) and spec_data.get(key) not in (None, [], {}):
                raise TrainingError(f"--resume with a different {key} than the interrupted run: start a new run with another --out.")
        # The interrupted run's settings, with this run's number of processes (the result does not depend on it).
        spec = FinetuneSpec.from_dict({**saved, "resume": True, "nproc": spec.nproc})
    else:
        shutil.rmtree(work, ignore_errors=True)
    return spec, resuming


def _plan_job(spec: FinetuneSpec, sources: Any, method: Any, base: BaseModel, device: str, bf16: bool,
              four_bit: bool, *, shards: int = 1, copies: int = 1) -> tuple[bool, Plan]:
    """Whether the data are documents, and the memory plan (batch, row length, checkpointing)."""
    documents = sources.dataset is None
    est_tokens = planner.estimate_tokens(sum(len(d.text) for d in sources.documents)) if documents else 0
    prefer_seq = planner.before_data(documents=documents, est_tokens=est_tokens, seq_len=spec.seq_len)
    rows_per_step = (planner.documents_rows_per_step(max(1, est_tokens // max(1, (prefer_seq or 1024) - 64)))
                     if documents and not (spec.batch or spec.grad_accum) else None)
    return documents, _plan(spec, method, base, device, bf16, four_bit, prefer_seq, rows_per_step, shards=shards,
                            copies=copies)


def _plan(spec: FinetuneSpec, method: Any, base: BaseModel, device: str, bf16: bool, four_bit: bool,
          prefer_seq: int | None, rows_per_step: int | None, *, shards: int = 1, copies: int = 1) -> Plan:
    hidden, layers, vocab = _shape(base)
    fraction = 1.0 if method.output == "model" else 0.02
    full_weights = method.output == "model" or method.name == "delta-lora"
    return plan(device=device, bf16=bf16, parameters=base.parameters, trainable_fraction=fraction, hidden=hidden,
                layers=layers, vocab=vocab, context=base.context_length, seq_len=spec.seq_len, batch=spec.batch,
                grad_accum=spec.grad_accum, checkpointing=spec.gradient_checkpointing, full_weights=full_weights,
                four_bit=four_bit, prefer_seq_len=prefer_seq, rows_per_step=rows_per_step, shards=shards,
                copies=copies)


def _shape(base: BaseModel) -> tuple[int, int, int]:
    if base.kind == "gguf":
        from core.library.gguf_meta import read_gguf_info

        info = read_gguf_info(base.path)
        return int(info.embedding_length or 2048), int(info.block_count or 24), int(info.vocab_size or 32000)
    config = json.loads((base.path / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config") or config
    return (int(config.get("hidden_size", 2048)), int(config.get("num_hidden_layers", 24)),
            int(config.get("vocab_size", 32000)))


def _chat_format(base: BaseModel, tokenizer: Any) -> Any:
    from core.engine.templates import choose_format

    vocab = tokenizer.get_vocab()
    template = base.chat_template or (tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None)
    return choose_format(base.architecture, template, lambda text: text in vocab)


def _data(work: Path, sources: Any, spec: FinetuneSpec, encoder: ExampleEncoder, resources: Plan, tokenizer: Any,
          packing: bool, emit: Emit, replay: Callable[[], list[str]] | None = None) -> PreparedData:
    import torch

    cached = work / "data.pt"
    if spec.resume and cached.exists():
        data: PreparedData = torch.load(cached, weights_only=False)
        return data
    data = build(sources, spec, encoder, seq_len=resources.seq_len, pad_id=int(tokenizer.pad_token_id),
                 packing=packing, progress=lambda m: emit({"event": "stage", "stage": "data", "message": m}),
                 replay=replay)
    torch.save(data, cached)
    return data


OVERFIT_MARGIN = 0.05  # final held-out loss this much (relative) above its best during training


def overfitting_warning(evals: list[dict[str, Any]], final_loss: float) -> str | None:
    """Words for a run whose held-out loss rose after its best point (the model memorised its data)."""
    if not evals:
        return None
    best = min(evals, key=lambda e: float(e["eval_loss"]))
    if final_loss <= float(best["eval_loss"]) * (1 + OVERFIT_MARGIN):
        return None
    return (f"The held-out loss was lowest at step {best['step']} ({float(best['eval_loss']):.3f}) and ended at "
            f"{final_loss:.3f}: the model started memorising the training data. Stopping near there "
            f"(--max-steps {best['step']}) or more data would generalise better.")


def _measure(trainer: Trainer, data: PreparedData, encoder: ExampleEncoder, spec: FinetuneSpec, *,
             reference: bool) -> dict[str, Any]:
    metrics: dict[str, Any] = dict(trainer.evaluate(reference=reference))
    metrics.pop("segment_logp", None)
    if data.probes:
        result = knowledge.score(trainer, encoder, data.probes, reference=reference)
        metrics["knowledge"] = {**result.to_dict(), "picked": result.picked}
        restated = getattr(data, "restated", [])  # asked in other words (absent from data cached by older runs)
        if restated:
            other = knowledge.score(trainer, encoder, restated, reference=reference)
            metrics["knowledge"]["restated"] = {**other.to_dict(), "picked": other.picked}
    metrics["samples"] = _generate(trainer, data, encoder.tokenizer, spec, reference=reference)
    return metrics


def _generate(trainer: Trainer, data: PreparedData, tokenizer: Any, spec: FinetuneSpec, *, reference: bool) -> list[dict[str, str]]:
    """Greedy samples. Sharded, every rank generates (each token is a collective forward) and keeps stepping
    until all have stopped (transformers' ``synced_gpus``, made for FSDP and ZeRO-3)."""
    import torch

    out = []
    model: Any = trainer.p.model
    ctx = trainer.p.reference() if reference and trainer.p.has_reference else nullcontext()
    with torch.no_grad(), ctx:
        for sample in data.samples:
            ids = torch.tensor([sample["ids"]], device=trainer.device)
            with trainer._autocast():
                # use_cache: the training config turns the KV cache off, and without it every new token
                # re-runs the whole sequence.
                gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=spec.sample_tokens,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=True,
                                     synced_gpus=trainer.sharded)
            text = tokenizer.decode(gen[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
            out.append({"prompt": sample["prompt"], "output": text.strip(), "expected": sample.get("expected", "")})
    return out


def _manifest(spec: FinetuneSpec, base: BaseModel, method_name: str, method_config: Any, settings: TrainSettings,
              data: PreparedData, resources: Plan, trainer: Trainer, state: TrainState, before: dict[str, Any],
              after: dict[str, Any], started: float, n_trainable: int, output: str, *,
              processes: int = 1) -> dict[str, Any]:
    import dataclasses

    from core import __version__

    return {
        "format": 1,
        "kind": output,
        "created_at": time.time(),
        "hearth_version": __version__,
        "base": {**base.to_dict(), "sha256": sha256_of(base.path)},
        "method": {"name": method_name, "options": dataclasses.asdict(method_config)},
        "objective": settings.objective,
        "data": data.summary,
        "hyperparameters": {**dataclasses.asdict(settings), "total_steps": trainer.total_steps,
                            "trainable_parameters": n_trainable, "device": resources.device,
                            "processes": processes},
        "metrics": {
            "before": {k: before[k] for k in ("eval_loss", "perplexity")},
            "after": {k: after[k] for k in ("eval_loss", "perplexity")},
            "samples": [{"prompt": b["prompt"], "before": b["output"], "after": a["output"], "expected": b["expected"]}
                        for b, a in zip(before["samples"], after["samples"], strict=True)],
            **({"knowledge": _knowledge_report(data, before["knowledge"], after["knowledge"])}
               if "knowledge" in after else {}),
            "train_loss": state.history[-1]["loss"] if state.history else None,
            "loss_history": state.history,
            "eval_history": state.evals,
            "duration_s": round(time.time() - started, 1),
        },
    }


def _knowledge_report(data: PreparedData, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The knowledge check for the manifest: the counts and every item with the model's pick before and after;
    ``restated``: the same for the questions asked in other words."""
    def items(probes: list[Any], b_picked: list[int], a_picked: list[int]) -> list[dict[str, Any]]:
        return [{"question": p.question, "prefix": p.prefix, "suffix": p.suffix, "answer": p.answer,
                 "choices": list(p.choices), "answer_index": p.answer_index, "kind": p.kind, "source": p.source,
                 "before": p.choices[b], "after": p.choices[a]}
                for p, b, a in zip(probes, b_picked, a_picked, strict=True)]

    report = {"before": before["correct"], "after": after["correct"], "total": after["total"],
              "items": items(data.probes, before["picked"], after["picked"])}
    if "restated" in after:
        b, a = before["restated"], after["restated"]
        report["restated"] = {"before": b["correct"], "after": a["correct"], "total": a["total"],
                              "items": items(data.restated, b["picked"], a["picked"])}
    return report


def _public(knowledge_metrics: dict[str, Any]) -> dict[str, Any]:
    """The knowledge check's figures for an event: counts and picks of the sentences' half, counts of the other."""
    out = {k: v for k, v in knowledge_metrics.items() if k != "restated"}
    if "restated" in knowledge_metrics:
        out["restated"] = {"correct": knowledge_metrics["restated"]["correct"],
                           "total": knowledge_metrics["restated"]["total"]}
    return out


def _restated_counts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int] | None:
    b, a = before["knowledge"].get("restated"), after["knowledge"].get("restated")
    if not b or not a:
        return None
    return {"before": b["correct"], "after": a["correct"], "total": a["total"]}


def main(spec: dict[str, Any], emit: Emit, should_stop: Callable[[], bool]) -> int:
    """Entry point used by ``core.jobs``.

    A spec with ``nproc > 1`` starts that many processes with torchrun (``core.finetune.torchrun``) and
    relays rank 0's events; a job started by a launcher (``RANK`` in the environment) is one of the ranks.
    """
    dist = Dist.from_env()
    if dist.enabled:
        return run(spec, emit, should_stop, dist)
    if int(spec.get("nproc") or 1) > 1:
        from core.finetune.torchrun import run_processes

        return run_processes(spec, emit, should_stop)
    return run(spec, emit, should_stop)
