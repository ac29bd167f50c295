"""The training-process side of Delta-LoRA (see ``delta_lora`` for the update rule and its source)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.finetune.methods.base import PrepareContext, Prepared


class DeltaLoraPrepared(Prepared):
    def __init__(self, model: nn.Module, causal_lm: nn.Module, ctx: PrepareContext, cfg: Any) -> None:
        super().__init__(model, causal_lm, ctx)
        self.cfg = cfg
        self.step = 0
        # Each LoRA layer: (base linear, A param, B param, scale).
        self.layers: list[tuple[str, Any, Any, Any, float]] = []
        for name, module in model.named_modules():
            lora_a = getattr(module, "lora_A", None)
            if isinstance(lora_a, nn.ModuleDict) and "default" in lora_a:
                base = module.get_base_layer()
                if base.weight.dtype != torch.float32:
                    base.float()  # small per-step deltas vanish in 16-bit weights
                self.layers.append(
                    (name, base, lora_a["default"].weight, module.lora_B["default"].weight,
                     float(module.scaling["default"]))
                )
        self.prev: dict[str, torch.Tensor] = {}  # B·A before the step, per layer
        self.start: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # (A_K, B_K)
        if cfg.start_step == 0:
            self._snapshot_start()

    def _snapshot_start(self) -> None:
        for name, _base, a, b, _s in self.layers:
            self.start[name] = (a.detach().clone(), b.detach().clone())

    def make_optimizer(self) -> torch.optim.Optimizer:
        self._remember()
        return super().make_optimizer()

    def _remember(self) -> None:
        with torch.no_grad():
            for name, _base, a, b, _s in self.layers:
                self.prev[name] = b.detach() @ a.detach()

    def after_step(self) -> None:
        self.step += 1
        lam = self.cfg.update_ratio
        with torch.no_grad():
            if self.step > self.cfg.start_step and lam > 0:
                for name, base, a, b, scale in self.layers:
                    now = b @ a
                    base.weight.add_((now - self.prev[name]).to(base.weight.dtype), alpha=lam * scale)
                    self.prev[name] = now
            else:
                self._remember()
            if self.step == self.cfg.start_step:
                self._snapshot_start()

    def extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "start": self.start}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        # The base weights are fresh from disk: rebuild W = W0 + lambda*s*(B_t A_t - B_K A_K).
        self.step = int(state["step"])
        self.start = state["start"]
        lam = self.cfg.update_ratio
        with torch.no_grad():
            if self.step > self.cfg.start_step and lam > 0:
                for name, base, a, b, scale in self.layers:
                    a0, b0 = self.start[name]
                    base.weight.add_((b @ a - b0 @ a0).to(base.weight.dtype), alpha=lam * scale)
        self._remember()

    def save(self, folder: Path) -> None:
        """Save as a plain LoRA whose product equals the total change (see the module docstring)."""
        from safetensors.torch import load_file, save_file

        super().save(folder)
        lam = self.cfg.update_ratio if self.step > self.cfg.start_step else 0.0
        weights_path = folder / "adapter_model.safetensors"
        config_path = folder / "adapter_config.json"
        tensors = load_file(str(weights_path))
        config = json.loads(config_path.read_text(encoding="utf-8"))
        old_scale = float(config["lora_alpha"]) / int(config["r"])
        need_start = any(bool(b0.abs().max() > 0) for _a0, b0 in self.start.values()) and lam > 0
        rank = int(config["r"]) * (2 if need_start else 1)
        # New scale 1 (alpha = rank): fold each old scale into B.
        by_layer = {name: (a, b) for name, _base, a, b, _s in self.layers}
        out: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if ".lora_A." in key or ".lora_B." in key:
                continue
            out[key] = value
        for name, (a, b) in by_layer.items():
            prefix = _saved_prefix(name, tensors)
            new_a = a.detach().float().cpu()
            new_b = (1.0 + lam) * old_scale * b.detach().float().cpu()
            if need_start:
                a0, b0 = self.start[name]
                new_a = torch.cat([new_a, a0.float().cpu()], dim=0)
                new_b = torch.cat([new_b, -lam * old_scale * b0.float().cpu()], dim=1)
            out[f"{prefix}.lora_A.weight"] = new_a.contiguous()
            out[f"{prefix}.lora_B.weight"] = new_b.contiguous()
        save_file(out, str(weights_path), metadata={"format": "pt"})
        config["r"] = rank
        config["lora_alpha"] = rank
        config["use_rslora"] = False
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _saved_prefix(module_name: str, saved: dict[str, torch.Tensor]) -> str:
    # peft saves "base_model.model.<path>.lora_A.weight" (the adapter name removed).
    for key in saved:
        if key.endswith(".lora_A.weight"):
            prefix = key[: -len(".lora_A.weight")]
            if prefix.endswith(module_name.removeprefix("base_model.model.")):
                return prefix
    raise RuntimeError(f"the saved adapter has no weights for {module_name}")
