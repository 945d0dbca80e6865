"""
End-to-end check that the tasks are trainable: SFT a tiny GPT (nanochat/gpt.py) on rendered SynthMath
conversations, loss only where the tokenizer's mask is 1, and the masked loss falls on the training batch
and on unseen items of the same task. (The real SFT loop is scripts/chat_sft.py; this only shows that
task -> (ids, mask) -> loss is wired right.)

    python -m pytest tests/test_tasks_sft.py -q
"""
import pytest
import torch

from tasks.synthmath import SynthMath

tokenizer = pytest.importorskip("nanochat.tokenizer")
gpt = pytest.importorskip("nanochat.gpt")


def batch(tok, conversations, T):
    """(inputs, targets) of shape (B, T): targets -1 where the mask is 0 or past the end (ignore_index)."""
    B = len(conversations)
    x = torch.zeros(B, T, dtype=torch.long)
    y = torch.full((B, T), -1, dtype=torch.long)
    for b, conv in enumerate(conversations):
        ids, mask = tok.render_conversation(conv, max_tokens=T + 1)
        ids, mask = torch.tensor(ids), torch.tensor(mask)
        n = len(ids) - 1
        x[b, :n] = ids[:-1]
        y[b, :n] = torch.where(mask[1:] == 1, ids[1:], -1)  # learn only the assistant's tokens
    return x, y


def test_sft_lowers_masked_loss_on_the_task():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; tiny matmuls gain nothing from threads
    task = SynthMath("train", min_steps=1, max_steps=2, families=["inventory"])
    train, unseen = [task[i] for i in range(8)], [task[i] for i in range(1000, 1008)]
    corpus = [c["messages"][0]["content"] + str(c["solutions"]) for c in [task[i] for i in range(200, 400)]]
    tok = tokenizer.Tokenizer.train_from_iterator(iter(corpus), vocab_size=256 + len(tokenizer.SPECIAL_TOKENS) + 128)
    T = 128
    config = gpt.GPTConfig(sequence_len=T, vocab_size=tok.get_vocab_size(), n_layer=1, n_head=2, n_kv_head=2, n_embd=64)
    with torch.device("meta"):
        model = gpt.GPT(config)
    model.to_empty(device="cpu")
    model.init_weights()
    xt, yt = batch(tok, train, T)
    xu, yu = batch(tok, unseen, T)
    assert (yt != -1).sum() > 0.3 * (xt != 0).sum()  # a good share of the tokens are learnable answers
    with torch.no_grad():
        before_train, before_unseen = model(xt, yt).item(), model(xu, yu).item()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(30):
        loss = model(xt, yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after_train, after_unseen = model(xt, yt).item(), model(xu, yu).item()
    torch.set_num_threads(threads)
    print(f"masked loss: train {before_train:.3f} -> {after_train:.3f}, unseen {before_unseen:.3f} -> {after_unseen:.3f}")
    assert after_train < 0.5 * before_train, (before_train, after_train)
    assert after_unseen < 0.8 * before_unseen, (before_unseen, after_unseen)  # it learned the task, not just the rows
