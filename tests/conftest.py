"""
Fixtures shared by several test files (pytest finds this file by itself). Helpers that are not fixtures live in
tests/tiny_model.py.
"""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is fastest, and on a shared machine many threads thrash. Use it in a file with
    `pytestmark = pytest.mark.usefixtures("one_thread")`; the thread count is restored after the file."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
