"""
Bits per byte: the validation loss that does not depend on the tokenizer.

Mean cross-entropy per token changes when the vocabulary changes (bigger tokens, higher loss per token), so
we sum the loss in nats over all predicted tokens and divide by the number of UTF-8 bytes those tokens stand
for, then convert nats to bits: bpb = sum(loss) / (ln 2 * sum(bytes)). Special tokens (<|bos|> etc.) are 0
bytes and their loss is left out too; targets of -1 (ignored) count for nothing. Totals are summed across
ranks with all_reduce, so every rank returns the same number.

    bpb = evaluate_bpb(model, val_loader, steps=20, token_bytes=get_token_bytes(tokenizer, device))
"""
import math

import torch
import torch.distributed as dist


@torch.no_grad()
def evaluate_bpb(model, batches, steps, token_bytes):
    """`batches` yields (inputs, targets) of shape (B, T); token_bytes is a LongTensor (vocab,) on the device."""
    device = token_bytes.device
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=device)
    for _ in range(steps):
        x, y = next(batches)
        loss = model(x, y, loss_reduction="none")  # (B, T) nats, 0 where y == -1
        nbytes = torch.where(y >= 0, token_bytes[y.clamp(min=0)], 0)  # (B, T)
        total_nats += (loss * (nbytes > 0)).sum(dtype=torch.float64)
        total_bytes += nbytes.sum()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total_nats)
        dist.all_reduce(total_bytes)
    if total_bytes.item() == 0:
        raise ValueError("bits per byte over zero bytes: the evaluation batches held no text tokens")
    return total_nats.item() / (math.log(2) * total_bytes.item())
