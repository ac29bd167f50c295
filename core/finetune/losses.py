"""Losses for the training loop: a memory-light output-layer cross-entropy and the DPO loss.

The output layer of a small model with a large vocabulary (Gemma 3: 262k tokens) costs more than the
rest of the network, and its logits for a batch (tokens x vocabulary x 4 bytes) can exceed the
model's own size. ``token_nll`` computes logits only at positions that have a target, a few hundred
rows at a time, and works out the gradient with respect to the hidden states in the same pass
(softmax - one-hot, times the weight), so no logits are kept for the backward pass.

torch is imported where it is used (the autograd function is defined on first use), so importing
this module costs nothing outside a training process.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

LOGIT_BUDGET = 64 * 1024 * 1024  # float32 logits per chunk (256 MB)


@cache
def _fused_nll() -> Any:
    """The autograd function behind ``token_nll``."""
    import torch

    class FusedNLL(torch.autograd.Function):
        @staticmethod
        def forward(  # type: ignore[override]
            ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
            softcap: float, compute_dtype: torch.dtype, weight_lowp: torch.Tensor | None,
        ) -> torch.Tensor:
            w = weight_lowp if weight_lowp is not None else weight.to(compute_dtype)
            n, vocab = hidden.shape[0], weight.shape[0]
            chunk = max(16, LOGIT_BUDGET // vocab)
            nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if hidden.requires_grad else None
            for s in range(0, n, chunk):
                h = hidden[s : s + chunk].to(compute_dtype)
                t = targets[s : s + chunk]
                logits, dcap = _logits(h, w, softcap)
                lse = torch.logsumexp(logits, dim=-1)
                nll[s : s + chunk] = lse - logits.gather(1, t[:, None]).squeeze(1)
                if grad_h is not None:
                    # d nll / d logits = softmax - one_hot; through the soft cap, times (1 - tanh^2).
                    g = torch.exp(logits.sub_(lse[:, None]))
                    g[torch.arange(len(t), device=g.device), t] -= 1.0
                    if dcap is not None:
                        g.mul_(dcap)
                    grad_h[s : s + chunk] = (g.to(compute_dtype) @ w).to(hidden.dtype)
            ctx.save_for_backward(grad_h if grad_h is not None else torch.empty(0), hidden, weight, targets)
            ctx.softcap, ctx.compute_dtype, ctx.chunk = softcap, compute_dtype, chunk
            return nll

        @staticmethod
        def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
            grad_h, hidden, weight, targets = ctx.saved_tensors
            gh = grad_h * grad_out[:, None].to(grad_h.dtype) if ctx.needs_input_grad[0] else None
            gw = None
            if ctx.needs_input_grad[1]:
                # Only when the output layer itself is trained (full fine-tuning): recompute per chunk.
                w = weight.to(ctx.compute_dtype)
                gw = torch.zeros_like(weight, dtype=torch.float32)
                for s in range(0, hidden.shape[0], ctx.chunk):
                    h = hidden[s : s + ctx.chunk].to(ctx.compute_dtype)
                    t = targets[s : s + ctx.chunk]
                    logits, dcap = _logits(h, w, ctx.softcap)
                    g = torch.softmax(logits, dim=-1)
                    g[torch.arange(len(t), device=g.device), t] -= 1.0
                    if dcap is not None:
                        g.mul_(dcap)
                    g.mul_(grad_out[s : s + ctx.chunk, None])
                    gw += (g.to(ctx.compute_dtype).T @ h).float()
                gw = gw.to(weight.dtype)
            return gh, gw, None, None, None, None

    return FusedNLL


def _logits(h: torch.Tensor, w: torch.Tensor, softcap: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    z = (h @ w.T).float()
    if not softcap:
        return z, None
    # Gemma 2's final-logit soft cap: cap * tanh(z / cap).
    t = torch.tanh(z / softcap)
    return t * softcap, 1.0 - t * t


def token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    softcap: float = 0.0,
    compute_dtype: torch.dtype | None = None,
    weight_lowp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative log-likelihood of each target under ``hidden @ weight.T`` (rows of hidden = targets).

    ``compute_dtype`` is the matmul dtype (default float32).
    """
    import torch

    compute_dtype = compute_dtype or torch.float32
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        out: torch.Tensor = _fused_nll().apply(
            hidden, weight, targets, float(softcap or 0.0), compute_dtype, weight_lowp
        )
        return out


def reference_nll(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float = 0.0) -> torch.Tensor:
    """The same quantity computed the plain way (full logits); for tests."""
    import torch.nn.functional as F

    logits, _ = _logits(hidden.float(), weight.float(), softcap)
    return F.cross_entropy(logits, targets, reduction="none")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization loss per pair and the implicit reward margin.

    Rafailov et al., arXiv:2305.18290, eq. 7:
    L = -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]),
    with each log-probability summed over the response tokens.
    """
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin), margin.detach()
