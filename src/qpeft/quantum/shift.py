"""Parameter-shift gradients for backends that can only run circuits.

An *executor* is any callable ``executor(circuit, inputs, weights) -> (batch, n_out)`` with
inputs ``(batch, n_inputs)`` (or None) and weights ``(n_weights,)`` or ``(batch, n_weights)``.
The backward pass shifts one angle occurrence at a time (a weight used twice is shifted at
each use, and the results summed) by its gate's shift rule, and sends *all* shifted
circuits to the executor as one batch, so a remote backend sees a single large job batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qpeft.quantum.circuit import Circuit, Input, Weight
from qpeft.quantum.gates import get_gate

Executor = Callable[[Circuit, torch.Tensor | None, torch.Tensor | None], torch.Tensor]


def _slot_rules(expanded: Circuit):
    """Shift rules of every input slot and every weight slot, in slot order."""
    input_rules, weight_rules = [], []
    for op in expanded.ops:
        rule = get_gate(op.gate).shift_rule
        for p in op.params:
            if isinstance(p, Input):
                input_rules.append(rule)
            elif isinstance(p, Weight):
                weight_rules.append(rule)
    return input_rules, weight_rules


def shift_jacobians(
    circuit: Circuit,
    inputs: torch.Tensor | None,
    weights: torch.Tensor | None,
    executor: Executor,
    need_inputs: bool = True,
    need_weights: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """d out / d angle for every input slot and weight slot, by parameter shift.

    inputs: (batch, n_inputs) or None; weights: (n_weights,) or one row per circuit,
    (batch, n_weights). Returns (d_inputs (S_in, batch, n_out) or None, d_weights (S_w, batch, n_out) or None)
    where slots are those of ``circuit.expand_slots()``.
    """
    expanded, input_of_slot, weight_of_slot = circuit.expand_slots()
    input_rules, weight_rules = _slot_rules(expanded)
    if inputs is not None:
        batch = inputs.shape[0]
    else:
        batch = weights.shape[0] if weights is not None and weights.dim() == 2 else 1
    x = inputs[:, input_of_slot] if inputs is not None and input_of_slot else None  # (B, S_in)
    w = weights[..., weight_of_slot] if weights is not None and weight_of_slot else None  # (S_w,) or (B, S_w)
    w_rows = None if w is None else w.expand(batch, -1)

    variants_x, variants_w, plan = [], [], []
    for kind, rules, base in (("input", input_rules, x), ("weight", weight_rules, w_rows)):
        if base is None or (kind == "input" and not need_inputs) or (kind == "weight" and not need_weights):
            continue
        for slot, rule in enumerate(rules):
            for coeff, shift in rule:
                for sign in (1.0, -1.0):
                    shifted = base.clone()
                    shifted[:, slot] += sign * shift
                    variants_x.append(shifted if kind == "input" else x)
                    variants_w.append(shifted if kind == "weight" else w_rows)
                    plan.append((kind, slot, sign * coeff))
    if not plan:
        return None, None
    all_x = None if x is None else torch.cat(variants_x)
    all_w = None if w is None else torch.cat(variants_w)
    with torch.no_grad():
        out = executor(expanded, all_x, all_w)
    out = out.reshape(len(plan), batch, -1)
    d_in = torch.zeros(len(input_of_slot), batch, out.shape[-1], dtype=out.dtype, device=out.device)
    d_w = torch.zeros(len(weight_of_slot), batch, out.shape[-1], dtype=out.dtype, device=out.device)
    for k, (kind, slot, coeff) in enumerate(plan):
        (d_in if kind == "input" else d_w)[slot] += coeff * out[k]
    return (d_in if need_inputs else None), (d_w if need_weights else None)


class ParameterShift(torch.autograd.Function):
    """``out = executor(circuit, inputs, weights)`` with a parameter-shift backward."""

    @staticmethod
    def forward(ctx, inputs, weights, circuit: Circuit, executor: Executor):
        ctx.circuit, ctx.executor = circuit, executor
        ctx.save_for_backward(inputs, weights)
        with torch.no_grad():
            return executor(circuit, inputs, weights)

    @staticmethod
    def backward(ctx, grad_out):
        inputs, weights = ctx.saved_tensors
        circuit: Circuit = ctx.circuit
        need_x = ctx.needs_input_grad[0] and circuit.n_inputs > 0
        if need_x and circuit.amplitude_encoding:
            raise ValueError(
                "parameter_shift cannot differentiate amplitude-encoded inputs (they are not "
                "gate angles); use angle encoding or diff_method='backprop'"
            )
        need_w = ctx.needs_input_grad[1] and circuit.n_weights > 0
        x = inputs if inputs.numel() else None
        d_in, d_w = shift_jacobians(circuit, x, weights, ctx.executor, need_x, need_w)
        _, input_of_slot, weight_of_slot = circuit.expand_slots()
        grad_x = grad_w = None
        if d_in is not None:
            per_slot = (d_in * grad_out.unsqueeze(0)).sum(-1).T  # (batch, S_in)
            grad_x = torch.zeros_like(inputs)
            grad_x.index_add_(1, torch.tensor(input_of_slot, device=inputs.device), per_slot.to(inputs.dtype))
        if d_w is not None:
            slots = torch.tensor(weight_of_slot, device=weights.device)
            grad_w = torch.zeros_like(weights)
            if weights.dim() == 2:  # one row of weights per circuit
                per_slot = (d_w * grad_out.unsqueeze(0)).sum(-1).T  # (batch, S_w)
                grad_w.index_add_(1, slots, per_slot.to(weights.dtype))
            else:
                per_slot = (d_w * grad_out.unsqueeze(0)).sum((1, 2))  # (S_w,)
                grad_w.index_add_(0, slots, per_slot.to(weights.dtype))
        return grad_x, grad_w, None, None


def parameter_shift(circuit: Circuit, inputs: torch.Tensor | None, weights: torch.Tensor, executor: Executor):
    """Run ``executor`` with gradients to inputs and weights by the parameter-shift rule.

    inputs: (batch, n_inputs) or None; weights: (n_weights,), or (batch, n_weights): one row
    per circuit (with inputs None, the batch is the weights' rows). Returns the executor's
    output, (batch, n_out), whose backward runs all shifted circuits as one batch.
    """
    if inputs is None:
        inputs = torch.zeros(1, 0, dtype=weights.dtype, device=weights.device)
    return ParameterShift.apply(inputs, weights, circuit, _none_if_empty(executor))


def _none_if_empty(executor: Executor) -> Executor:
    def run(circuit, inputs, weights):
        return executor(circuit, inputs if inputs is not None and inputs.shape[-1] else None, weights)

    return run
