"""
Policy-gradient building blocks for RL with verifiable rewards (scripts/chat_rl.py), written so that DPO and
on-policy distillation reuse the same log-prob and masking code.

The pipeline, one function per step:

    inputs, targets = collate(sequences, masks, pad_id)      # (B, T); targets -1 where no gradient may flow
    logp, entropy = token_logprobs(model, inputs, targets)    # (B, T) log pi(token), 0 on masked positions
    adv = compute_advantages(rewards, "mean")                 # (P, G) one advantage per sampled completion
    w = loss_weights(targets >= 0, "token")                   # (B, T) how much each token counts
    loss = policy_loss(logp, old_logp, adv_per_row, w, clip_eps=0.2, ref_logp=ref, kl_beta=0.0)

THE MASK RULE (the same as the tokenizer's for SFT): a token gets gradient only if the model chose it. The
prompt and everything the engine forced (calculator outputs, budget-forcing tokens) have mask 0: the model
was never asked to produce them, so rewarding or punishing their probability would teach nothing true.

Conventions: P prompts per step, G samples per prompt, B = P*G rows. A "token loss" is a (B, T) tensor; the
scalar loss is always sum(weights * token_loss) with weights from `loss_weights`, which holds the whole
normalization choice (DAPO token-level, per-sequence mean, or Dr. GRPO's constant). Because the weights are
computed once for the full step, a step can be split into micro-batches (or ranks) and the gradients add up
to exactly the full-batch gradient.

The last section is the optimizer the post-training scripts share (chat_rl, chat_dpo, chat_distill): its
flags, its construction and the lr schedule hook.

    python -m pytest tests/test_policy.py -q
"""
import torch
import torch.nn.functional as F

ADVANTAGES = ("mean", "grpo", "drgrpo")
LOSS_NORMS = ("token", "sequence", "constant")

# -----------------------------------------------------------------------------
# sampled sequences -> padded (inputs, targets)


def collate(sequences, masks, pad_id=0, device="cpu"):
    """
    Rows of token ids (prompt + completion) and their 0/1 masks (1 = the model sampled this token) ->
    inputs (B, T) and targets (B, T) for next-token prediction, T = longest row - 1. targets is -1 wherever
    the predicted token has mask 0 and on padding, so every loss below ignores those positions.
    """
    if len(sequences) != len(masks) or not sequences:
        raise ValueError(f"collate: got {len(sequences)} sequences and {len(masks)} masks; need the same, >= 1")
    T = max(len(s) for s in sequences) - 1
    if T < 1:
        raise ValueError("collate: every sequence has a single token; there is nothing to predict")
    inputs = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    targets = torch.full((len(sequences), T), -1, dtype=torch.long)
    for i, (seq, mask) in enumerate(zip(sequences, masks)):
        if len(seq) != len(mask):
            raise ValueError(f"collate: row {i} has {len(seq)} tokens but a mask of length {len(mask)}")
        n = len(seq) - 1
        seq_t = torch.tensor(seq, dtype=torch.long)
        keep = torch.tensor(mask[1:], dtype=torch.bool)  # the mask of the token being predicted
        inputs[i, :n] = seq_t[:-1]
        targets[i, :n] = torch.where(keep, seq_t[1:], -1)
    return inputs.to(device), targets.to(device)


# -----------------------------------------------------------------------------
# log-probabilities of the sampled tokens


def token_logprobs(model, inputs, targets, with_entropy=False):
    """
    log pi(target_t | prefix) for every position: (B, T), exactly 0 where targets == -1 (so sums over a row
    are sums over its sampled tokens). With with_entropy, also the entropy of the full next-token
    distribution (B, T), detached, 0 on masked positions (a diagnostic: it falls as the policy sharpens).
    The model's logits are the ones the engine samples from (fp32, soft-capped), at temperature 1.
    """
    logits = model(inputs)  # (B, T, V) fp32
    logp_all = F.log_softmax(logits, dim=-1)  # (B, T, V)
    valid = targets >= 0
    logp = logp_all.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    logp = torch.where(valid, logp, torch.zeros_like(logp))
    if not with_entropy:
        return logp
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, T)
        entropy = torch.where(valid, entropy, torch.zeros_like(entropy))
    return logp, entropy


def sequence_logprobs(model, inputs, targets):
    """log pi(completion | prompt) per row: (B,), the sum over unmasked tokens (what DPO compares)."""
    return token_logprobs(model, inputs, targets).sum(-1)


# -----------------------------------------------------------------------------
# advantages: how much better than its siblings each sample was


def compute_advantages(rewards, kind="mean", eps=1e-4):
    """
    rewards (P, G): G samples of each of P prompts -> advantages (P, G).
      mean:   r - mean(group). nanochat's simple recipe: REINFORCE with the group mean as baseline.
      grpo:   (r - mean) / (std + eps) (GRPO, DeepSeekMath, arXiv 2402.03300). Dividing by the std up-weights
              groups that are nearly all right or all wrong (Dr. GRPO shows this is a per-question bias).
      drgrpo: r - mean (Dr. GRPO, arXiv 2503.20783): no std division; its other half, no per-sequence length
              normalization, is the "constant" loss norm (see loss_weights).
    The std is the population std (unbiased=False), as the papers write it. A group with constant reward
    gets advantage exactly 0 under every kind, hence no gradient.
    """
    if kind not in ADVANTAGES:
        raise ValueError(f"advantage kind {kind!r}: expected one of {', '.join(ADVANTAGES)}")
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (prompts, samples_per_prompt), got shape {tuple(rewards.shape)}")
    centered = rewards - rewards.mean(dim=1, keepdim=True)  # (P, G)
    if kind == "grpo":
        return centered / (rewards.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centered


def nonconstant_groups(rewards):
    """(P,) bool: groups whose rewards are not all equal. The others carry no signal (DAPO's dynamic sampling,
    arXiv 2503.14476, filters them so the batch is made of prompts the policy can still learn from)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) > 0


def shape_rewards(task_rewards, finished, well_formed, format_reward=0.0, unfinished_penalty=0.0):
    """
    The reward the policy sees, per sample: the task's verifiable reward, plus `format_reward` when the
    answer is well formed (e.g. has a parseable `#### N`), minus `unfinished_penalty` when the sample hit the
    token limit without <|assistant_end|> (a model that rambles forever should not tie with one that answers
    wrongly and stops). All arguments are same-shaped sequences or tensors.
    """
    r = torch.as_tensor(task_rewards, dtype=torch.float32)
    r = r + format_reward * torch.as_tensor(well_formed, dtype=torch.float32)
    r = r - unfinished_penalty * (1.0 - torch.as_tensor(finished, dtype=torch.float32))
    return r


# -----------------------------------------------------------------------------
# loss pieces, all per token (B, T)


def loss_weights(valid, norm="token", num_tokens=None, num_seqs=None, max_len=None):
    """
    (B, T) weights such that the step's loss is sum(weights * token_loss). `valid` (B, T) bool marks the
    sampled tokens. The denominators default to this batch; pass the totals of the whole step (all
    micro-batches and ranks) when the step is split, so the pieces add up to the full-batch loss.
      token:    1 / (sampled tokens in the step). Every token counts the same, long answers weigh more in
                total (DAPO token-level loss, arXiv 2503.14476; also nanochat's).
      sequence: 1 / (num_seqs * tokens of its own row). Every sequence counts the same, so a token of a short
                answer weighs more (the original GRPO objective, arXiv 2402.03300).
      constant: 1 / (num_seqs * max_len). A fixed constant, no length bias at all (Dr. GRPO, arXiv 2503.20783).
    """
    if norm not in LOSS_NORMS:
        raise ValueError(f"loss norm {norm!r}: expected one of {', '.join(LOSS_NORMS)}")
    valid = valid.float()
    num_seqs = valid.size(0) if num_seqs is None else num_seqs
    if norm == "token":
        num_tokens = valid.sum() if num_tokens is None else num_tokens
        return valid / max(float(num_tokens), 1.0)
    if norm == "sequence":
        per_row = valid.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
        return valid / (per_row * num_seqs)
    if max_len is None:
        raise ValueError("loss norm 'constant' needs max_len (the generation limit, e.g. --max-new-tokens)")
    return valid / (num_seqs * max_len)


def pg_token_loss(logp, old_logp, advantages, clip_eps=0.2):
    """
    The PPO clipped surrogate, negated to be minimized (arXiv 1707.06347, eq. 7), per token:
        ratio = pi(t) / pi_old(t) = exp(logp - old_logp)
        loss  = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
    logp, old_logp (B, T); advantages (B,) per row or (B, T). On the first update of a batch old_logp equals
    logp (detached), the ratio is 1 and the gradient is exactly REINFORCE's: -A * grad log pi. Clipping only
    bites on later epochs (--ppo-epochs > 1), when the policy has moved away from the one that sampled.
    """
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1) broadcasts over T
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped)


def k3_kl(logp, ref_logp):
    """
    Per-token KL(pi || pi_ref) estimate on tokens sampled from pi: k3 = exp(d) - d - 1 with d = ref - logp
    (J. Schulman, "Approximating KL divergence", 2020; used by GRPO, arXiv 2402.03300 eq. 4). Unbiased,
    always >= 0, and 0 exactly when the two log-probs agree.
    """
    d = ref_logp.detach() - logp
    return torch.exp(d) - d - 1.0


def policy_loss(logp, old_logp, advantages, weights, clip_eps=0.2, ref_logp=None, kl_beta=0.0):
    """
    The scalar to minimize: sum(weights * (pg_token_loss + kl_beta * k3)). Returns (loss, stats) where stats
    holds detached diagnostics (the weighted KL, the fraction of clipped tokens).
    """
    token_loss = pg_token_loss(logp, old_logp, advantages, clip_eps)
    stats = {}
    if kl_beta > 0.0:
        if ref_logp is None:
            raise ValueError("kl_beta > 0 needs ref_logp, the reference model's log-probs of the same tokens")
        kl = k3_kl(logp, ref_logp)
        token_loss = token_loss + kl_beta * kl
        stats["kl"] = (weights * kl).sum().detach()
    with torch.no_grad():
        ratio = torch.exp(logp - old_logp)
        clipped = ((ratio - 1.0).abs() > clip_eps) & (weights > 0)
        stats["clip_frac"] = clipped.float().sum() / (weights > 0).float().sum().clamp(min=1.0)
    return (weights * token_loss).sum(), stats


# -----------------------------------------------------------------------------
# DPO: preference pairs instead of rewards (scripts/chat_dpo.py)


def sequence_logprob_stats(model, inputs, targets):
    """Per row: (sum of log pi over its unmasked tokens (B,), number of those tokens (B,)), for DPO."""
    logp = token_logprobs(model, inputs, targets)  # (B, T)
    return logp.sum(-1), (targets >= 0).sum(-1).float()


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1, chosen_len=None,
             rejected_len=None):
    """
    Direct Preference Optimization (arXiv 2305.18290, eq. 7), per pair. Inputs are (P,) summed log-probs of
    the chosen and rejected completions under the policy and the frozen reference. The implicit reward of a
    completion is beta * (log pi - log pi_ref); the loss pushes the chosen one's above the rejected one's:
        loss = -log sigmoid(reward_chosen - reward_rejected)
    With chosen_len / rejected_len (P,) token counts, every log-ratio is first divided by its completion's
    length: the length-normalized DPO of Tulu 3 (arXiv 2411.15124, sec. 5; TRL's "sigmoid_norm"), which
    stops the summed log-ratio from favouring long answers and wants a larger beta (5 instead of 0.1).
    Policy and reference are normalized by the same count, so the ratio stays a ratio of per-token means.
    Returns (losses (P,), reward_chosen (P,), reward_rejected (P,)), the rewards detached (for logging:
    reward accuracy = mean(reward_chosen > reward_rejected), margin = mean(reward_chosen - reward_rejected)).
    """
    if (chosen_len is None) != (rejected_len is None):
        raise ValueError("dpo_loss: pass both chosen_len and rejected_len (length-normalized) or neither")
    ratio_c = policy_chosen - ref_chosen.detach()  # (P,)
    ratio_r = policy_rejected - ref_rejected.detach()  # (P,)
    if chosen_len is not None:
        ratio_c = ratio_c / chosen_len.clamp(min=1.0)
        ratio_r = ratio_r / rejected_len.clamp(min=1.0)
    reward_c, reward_r = beta * ratio_c, beta * ratio_r
    losses = -F.logsigmoid(reward_c - reward_r)
    return losses, reward_c.detach(), reward_r.detach()


# -----------------------------------------------------------------------------
# on-policy distillation: a teacher grades every sampled token (scripts/chat_distill.py)


def reverse_kl_advantages(student_logp, teacher_logp, valid):
    """
    Per-token advantage of on-policy distillation (Thinking Machines, "On-Policy Distillation", Oct 2025;
    GKD, arXiv 2306.13649): A_t = -(log p_student(x_t) - log p_teacher(x_t)) on each token the student
    sampled, 0 elsewhere (prompt, forced tool outputs, padding). Its expectation over the student's samples
    is minus the reverse KL(student || teacher) at that position, so maximizing A with the policy gradient
    (discount 0: each token is judged alone) pulls the student toward the teacher exactly where the student
    goes. Detached: the advantage is a constant for the gradient, as a reward is. (B, T) in, (B, T) out.
    """
    adv = teacher_logp.detach() - student_logp.detach()
    return torch.where(valid, adv, torch.zeros_like(adv))


def tokenizer_mismatch(a, b):
    """None if tokenizers a and b map text and special tokens to the same ids, else a sentence saying how not."""
    if a.get_vocab_size() != b.get_vocab_size():
        return f"vocab sizes differ ({a.get_vocab_size()} vs {b.get_vocab_size()})"
    for name in a.get_special_tokens():
        if a.encode_special(name) != b.encode_special(name):
            return f"special token {name} has id {a.encode_special(name)} vs {b.encode_special(name)}"
    probe = "Tom has 12 apples and buys 7 more. How many? 12+7=19 #### 19 The quick brown fox."
    if a.encode(probe) != b.encode(probe):
        return "the same text encodes to different ids (different BPE merges)"
    return None


# -----------------------------------------------------------------------------
# the optimizer of the post-training scripts (chat_rl, chat_dpo, chat_distill)

OPTIMIZERS = ("muon", "adamw")


def add_optimizer_args(parser):
    """The optimizer flags; make_optimizer(model, args.optimizer, args.init_lr_frac, args.lr) reads them."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="muon", help="muon: the training MuonAdamW at --init-lr-frac of its lrs (nanochat) | adamw: AdamW on every parameter at --lr")
    parser.add_argument("--init-lr-frac", type=float, default=0.05, help="muon: fraction of the base lrs (0.2 embedding, 0.004 lm_head, 0.02 matrices)")
    parser.add_argument("--lr", type=float, default=1e-4, help="adamw: learning rate")


def make_optimizer(model, kind="muon", init_lr_frac=0.05, lr=1e-4):
    """
    muon: the pretraining MuonAdamW (nanochat/optim.py) with every lr scaled by init_lr_frac, as nanochat's RL
    does (the model is trained: small steps). adamw: plain AdamW at `lr` on every parameter, no weight decay
    (one process only: it does not average gradients over ranks). Every group gets "initial_lr", the lr that
    set_lr_multiplier scales.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer {kind!r}: expected one of {', '.join(OPTIMIZERS)}")
    if kind == "muon":
        from nanochat.optim import setup_optimizer
        optimizer = setup_optimizer(model)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = group["initial_lr"] * init_lr_frac
        return optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return optimizer


def set_lr_multiplier(optimizer, multiplier):
    """lr = initial_lr * multiplier for every group (the schedule is the caller's: e.g. 1 - step / num_steps)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
