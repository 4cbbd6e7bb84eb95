"""Per-sample gradients and fp32 clipping for the two-tower model.

Two kinds of trainable parameters, two representations of a row's gradient:

* **LoRA linears** (small): Opacus's :class:`~opacus.GradSampleModule` in hooks mode
  materialises ``[B, *shape]`` per-sample gradients. When the shared encoder runs twice
  per row (user text and positive item) the hooks sum both calls per row. Computed in fp32
  (:func:`linear_grad_sample_fp32`), also under bf16 autocast.
* **ID embeddings** of the hybrid head (``n_items x d``, large): a dense per-sample gradient
  would be ``[B, n_items, d]`` per table and step (for 17,632 items and B=32, 144 MB each).
  :class:`EmbeddingGradCollector` keeps each row's gradient as the looked-up ids and the
  gradient of the lookup's output instead, which is exact: a row's per-sample gradient of
  an embedding table is ``sum_t onehot(id_t) g_t^T``. Its norm and the clipped sum over rows
  are computed from that without ever forming the dense tensor (the same idea as Opacus's
  ghost clipping, which cannot be used for the whole model because the encoder's
  parameters are used twice per row).

:class:`FP32DPOptimizer` joins both: one norm per row over *all* trainable parameters,
clipping in fp32, and the clipped sums handed to Opacus's noise and scaling.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn


def linear_grad_sample_fp32(
    layer: nn.Linear, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-sample gradients of an ``nn.Linear`` computed in float32.

    Opacus's own sampler casts the (fp32) activations *down* to the backprops' dtype, so
    under bf16 autocast the per-sample gradients (and then the clip norms) would be bf16.
    Here both factors are upcast and the contraction over tokens runs in fp32.
    """
    a, b = activations[0].float(), backprops.float()
    out: dict[torch.Tensor, torch.Tensor] = {}  # keyed by the layer's parameters
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("n...i,n...j->nij", b, a)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = torch.einsum("n...k->nk", b)
    return out


class FP32GradSampleModule(GradSampleModule):
    """Opacus ``GradSampleModule`` (hooks) whose ``nn.Linear`` per-sample gradients are fp32."""

    GRAD_SAMPLERS: ClassVar[dict] = {**GradSampleModule.GRAD_SAMPLERS, nn.Linear: linear_grad_sample_fp32}


class EmbeddingGradCollector:
    """Exact per-row gradients of ``nn.Embedding`` tables, kept as ``(ids, output gradient)`` pairs.

    A forward hook on each table records the looked-up ids ``[B, ...]`` and a tensor hook
    on the lookup's output records its gradient ``[B, ..., d]`` during backward (batch
    first; every lookup of a backward pass is kept, so a table used several times per row
    sums all uses). Nothing is recorded in eval mode or without grad.

    Parameters
    ----------
    modules : list of nn.Embedding
        Tables whose weight is trainable.
    """

    def __init__(self, modules: list[nn.Embedding]) -> None:
        self.modules = modules
        self.params: list[Any] = [m.weight for m in modules]  # Parameters (Opacus sets attributes on them)
        self.calls: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {id(p): [] for p in self.params}
        self.handles = [m.register_forward_hook(self._forward_hook) for m in modules]

    def _forward_hook(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        assert isinstance(module, nn.Embedding)
        if not (module.training and torch.is_grad_enabled() and output.requires_grad):
            return
        ids = inputs[0].detach()
        if ids.dim() == 1:
            ids = ids[:, None]
        ids = ids.reshape(ids.shape[0], -1)
        key = id(module.weight)
        padding = module.padding_idx

        def record(grad: torch.Tensor) -> None:
            g = grad.detach().reshape(ids.shape[0], ids.shape[1], -1).float()
            if padding is not None:  # the padding row gets no gradient
                g = g * (ids != padding).unsqueeze(-1)
            self.calls[key].append((ids, g))

        output.register_hook(record)

    def clear(self) -> None:
        """Forget the recorded lookups (start of a step)."""
        for calls in self.calls.values():
            calls.clear()

    def squared_norms(self, batch: int) -> torch.Tensor:
        """``[B]`` squared per-row gradient norms summed over the tables (fp32).

        A row's gradient of a table has one row per *distinct* id the row looked up
        (summing every lookup of that id, across calls), so the lookups are grouped by
        ``(row, id)`` before squaring.
        """
        total = torch.zeros(batch)
        for p in self.params:
            calls = self.calls[id(p)]
            if not calls:
                continue
            if any(ids.shape[0] != batch for ids, _ in calls):
                raise ValueError(
                    "a trainable embedding was looked up without a batch dimension (e.g. BERT's position "
                    "embeddings, opacus#841): its per-sample gradients are undefined; keep the backbone's "
                    "embeddings frozen"
                )
            n, d = p.shape
            rows = torch.arange(batch)[:, None]
            keys = torch.cat([(rows * n + ids).reshape(-1) for ids, _ in calls])
            uniq, inv = torch.unique(keys, return_inverse=True)
            per_key = torch.zeros(len(uniq), d)
            offset = 0
            for ids, g in calls:
                per_key.index_add_(0, inv[offset : offset + ids.numel()], g.reshape(-1, d))
                offset += ids.numel()
            total.index_add_(0, uniq // n, per_key.pow(2).sum(1))
        return total

    def clipped_sum(self, p: nn.Parameter, factor: torch.Tensor) -> torch.Tensor:
        """``sum_i factor_i * grad_i`` of table ``p`` (dense ``[n, d]``, fp32 then ``p``'s dtype)."""
        out = torch.zeros(p.shape, dtype=torch.float32)
        for ids, g in self.calls[id(p)]:
            if len(ids) and bool((ids == ids[:1]).all()):  # the same ids in every row (shared negatives)
                out.index_add_(0, ids[0], torch.einsum("b,btd->td", factor, g))
            else:
                out.index_add_(0, ids.reshape(-1), (g * factor[:, None, None]).reshape(-1, p.shape[1]))
        return out.to(p.dtype)

    def dense(self, p: nn.Parameter, batch: int) -> torch.Tensor:
        """Materialised per-sample gradients ``[B, n, d]`` of table ``p`` (tests, small tables)."""
        out = torch.zeros((batch, *p.shape))
        for ids, g in self.calls[id(p)]:
            rows = torch.arange(batch)[:, None].expand_as(ids)
            out.index_put_((rows.reshape(-1), ids.reshape(-1)), g.reshape(-1, p.shape[1]), accumulate=True)
        return out

    def remove(self) -> None:
        """Remove the hooks and the records."""
        for h in self.handles:
            h.remove()
        self.clear()


class PerSampleGradients:
    """Per-sample gradient machinery attached to a model: Opacus hooks for linears, a collector for embeddings.

    Parameters
    ----------
    model : nn.Module
        The model (e.g. :class:`~fedrec.model.two_tower.TwoTower`); hooks are added in place
        and removed by :meth:`close`.
    """

    def __init__(self, model: nn.Module) -> None:
        tables = [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight.requires_grad]
        for m in tables:  # keep them out of Opacus's hooks: the collector handles them
            m.weight.requires_grad_(False)
        try:
            self.gsm = FP32GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
        finally:
            for m in tables:
                m.weight.requires_grad_(True)
        self.embeddings = EmbeddingGradCollector(tables)
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Forward through the wrapped model."""
        return self.gsm(*args, **kwargs)

    def dense(self, params: list[Any], batch: int) -> list[torch.Tensor]:
        """Per-sample gradients ``[B, *shape]`` of ``params`` after a backward (tests, small models)."""
        sparse = {id(p) for p in self.embeddings.params}
        return [self.embeddings.dense(p, batch) if id(p) in sparse else p.grad_sample.float() for p in params]

    def close(self) -> None:
        """Remove every hook and Opacus attribute from the model."""
        self.embeddings.remove()
        self.gsm._close()


class FP32DPOptimizer(DPOptimizer):
    """Opacus ``DPOptimizer`` with fp32 clipping over dense and embedding per-sample gradients.

    A clip norm computed in bf16 can be off by ~0.4%, letting a clipped gradient exceed
    ``max_grad_norm``: the sensitivity the accountant assumes would not hold. Here the
    norms, the clip factors and the clipped sums are fp32. Per-row norms are joint over
    all parameters (flat clipping). Gradient accumulation over several backward passes
    is not supported: one backward, one step (Poisson batches are never split here).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Wrapped optimizer.
    embeddings : EmbeddingGradCollector, optional
        Source of the embedding tables' per-row gradients (their parameters get no
        ``grad_sample``).
    **kwargs
        :class:`opacus.optimizers.DPOptimizer` arguments (``noise_multiplier``,
        ``max_grad_norm``, ``expected_batch_size``, ``loss_reduction``, ``generator``,
        ``secure_mode``).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, embeddings: EmbeddingGradCollector | None = None, **kwargs: Any
    ) -> None:
        super().__init__(optimizer, **kwargs)
        self.embeddings = embeddings
        self.last_norms: torch.Tensor | None = None

    def _sparse_ids(self) -> set[int]:
        return set() if self.embeddings is None else {id(p) for p in self.embeddings.params}

    @property
    def dense_params(self) -> list[Any]:
        """Parameters with Opacus per-sample gradients (``p.grad_sample``)."""
        sparse = self._sparse_ids()
        return [p for p in self.params if id(p) not in sparse]

    @property
    def grad_samples(self) -> list[torch.Tensor]:  # type: ignore[override]
        """Per-sample gradients of :attr:`dense_params`."""
        return [self._get_flat_grad_sample(p) for p in self.dense_params]

    @property
    def accumulated_iterations(self) -> int:
        """Always 1 (no gradient accumulation)."""
        return 1

    def clip_and_accumulate(self) -> None:
        """Clip each row's gradient (joint fp32 norm over all parameters) and sum into ``p.summed_grad``."""
        dense = self.dense_params
        samples = [self._get_flat_grad_sample(p).float() for p in dense]
        batch = len(samples[0]) if samples else 0
        sq = torch.zeros(batch)
        for g in samples:
            sq += g.flatten(1).pow(2).sum(1)
        if self.embeddings is not None:
            sq += self.embeddings.squared_norms(batch)
        norms = sq.sqrt()
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        self.last_norms = norms
        for p, g in zip(dense, samples, strict=True):
            _check_processed_flag(p.grad_sample)
            grad = torch.einsum("i,i...", factor, g).to(p.dtype)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)
        if self.embeddings is not None:
            for p in self.embeddings.params:
                grad = self.embeddings.clipped_sum(p, factor)
                p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad

    def pre_step(self, closure: Any = None) -> bool:
        """Clip, add noise, scale (Opacus's ``pre_step`` without its empty-model shortcut)."""
        self.clip_and_accumulate()
        if self._check_skip_next_step():
            self._is_last_step_skipped = True
            return False
        self.add_noise()
        self.scale_grad()
        if self.step_hook:
            self.step_hook(self)
        self._is_last_step_skipped = False
        return True

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Clear gradients, per-sample gradients and the recorded embedding lookups."""
        super().zero_grad(set_to_none)
        if self.embeddings is not None:
            self.embeddings.clear()
