"""
SmolTalk (arXiv 2502.02737; `HuggingFaceTB/smol-smoltalk`): general multi-turn chat conversations, the bulk
of online mid-training and SFT. Not scorable (no evaluate). Splits: train (train-usable), test.

Online only: no wheel carries it. Offline the mixture uses the synthetic tasks instead; asking for SmolTalk
offline is a one-line error naming that fix.

    python -m tasks.smoltalk              # print one conversation (needs the network)
"""
from tasks.common import Task, choose_source, load_hf


class SmolTalk(Task):
    eval_type = "generative"
    name = "SmolTalk"

    def __init__(self, split="train", source="auto", **kwargs):
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"SmolTalk split {split!r}: expected 'train' or 'test'")
        self.split, self.source = split, choose_source(source, "SmolTalk")
        if self.source == "offline":
            raise RuntimeError(
                "SmolTalk is only available online (Hugging Face); offline, leave it out of the mixture "
                "(the synthetic tasks, identity and spelling cover the chat format)"
            )
        self.ds = load_hf("HuggingFaceTB/smol-smoltalk", None, split)

    def num_examples(self):
        return len(self.ds)

    def get_example(self, index):
        messages = self.ds[index]["messages"]
        # keep the roles the tokenizer renders; a leading system message is kept (the tokenizer folds it)
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


if __name__ == "__main__":
    print(SmolTalk("train")[0])
