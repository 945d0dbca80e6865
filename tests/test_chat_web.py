"""
scripts/chat_web.py against real uvicorn servers on 127.0.0.1 (random ports) serving tiny checkpoints
(tests/tiny_model.py): the official `openai` client, a validation matrix, 1,000 fuzzed bodies, auth, overload
(429) and client disconnects. Run: python -m pytest tests/test_chat_web.py -q
"""
import http.client
import json
import random
import socket
import time

import pytest

from tests.tiny_model import chat_servers, reply_text, request, tiny_base_dir
from scripts.chat_web import APIError, validate_chat_request

openai = pytest.importorskip("openai", reason="pip install openai (dev dependency) to test the OpenAI API")

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEFAULTS = dict(temperature=0.8, top_k=50, max_tokens=1024)


@pytest.fixture(scope="module")
def base_dir():
    return tiny_base_dir()


@pytest.fixture(scope="module")
def servers(base_dir):
    with chat_servers(base_dir, ("--source", "sft", "--workers", "2", "--max-queue", "4"),
                      ("--source", "base", "--workers", "1", "--max-queue", "1", "--api-key", KEY)) as both:
        yield both


@pytest.fixture(scope="module")
def chat(servers):
    return servers[0]


@pytest.fixture(scope="module")
def babble(servers):
    return servers[1]


@pytest.fixture(scope="module")
def tok(base_dir):
    from nanochat.tokenizer import Tokenizer
    return Tokenizer.from_directory(f"{base_dir}/tokenizer")


def user(text):
    return [{"role": "user", "content": text}]


def wait_for(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


# -----------------------------------------------------------------------------
# the official openai client


def client_for(server, key="unused"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def stream_text(client, **kw):
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage is not None]
    return deltas, finish, usage


def test_openai_nonstream_matches_memorized_reply(chat):
    client = client_for(chat)
    for prompt in ("hi", "what is 12*3?", "show code"):
        r = client.chat.completions.create(model="nanochat", messages=user(prompt), temperature=0, max_tokens=60)
        assert r.object == "chat.completion"
        assert r.choices[0].message.role == "assistant"
        # the tool call and its (engine-forced) output arrive inline, marked, never hidden
        assert r.choices[0].message.content == reply_text(prompt)
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens > 0
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_openai_stream_equals_nonstream_for_same_seed(chat, babble):
    cases = [(client_for(chat), "hi", 1.5, 40), (client_for(babble, KEY), "tell me a story", 1.0, 48)]
    for client, prompt, temperature, max_tokens in cases:
        for seed in (1, 2, 3):
            kw = dict(model="nanochat", messages=user(prompt), temperature=temperature, seed=seed,
                      max_tokens=max_tokens, top_p=0.95)
            full = client.chat.completions.create(**kw)
            deltas, finish, usage = stream_text(client, **kw)
            assert "".join(deltas) == full.choices[0].message.content
            assert finish == [full.choices[0].finish_reason]
            assert usage[0].completion_tokens == full.usage.completion_tokens
            assert usage[0].prompt_tokens == full.usage.prompt_tokens
    # the babbling model never stops by itself: the budget is what ends it
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 48
    # different seeds give different samples (so "same seed, same text" above is not vacuous)
    texts = {client.chat.completions.create(model="m", messages=user("x"), seed=s, max_tokens=20).choices[0]
             .message.content for s in range(3)}
    assert len(texts) == 3


def test_concurrent_requests_on_two_workers_match_sequential(chat):
    """Two worker threads share one CPU model: concurrent generations must equal the same seeds run one by one."""
    import concurrent.futures
    client = client_for(chat)

    def ask(seed):
        r = client.chat.completions.create(model="m", messages=user("show code"), temperature=1.8, seed=seed,
                                           max_tokens=60)
        return r.choices[0].message.content

    sequential = [ask(s) for s in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        concurrent_ = list(ex.map(ask, range(6)))
    assert concurrent_ == sequential
    assert len(set(sequential)) > 1  # temperature 1.8 really samples


def test_stream_emoji_arrive_whole(chat, tok):
    assert len(tok.encode("🙂")) > 1 and len(tok.encode("🚀")) > 1  # otherwise this test proves nothing
    deltas, finish, _ = stream_text(client_for(chat), model="nanochat", messages=user("hi"), temperature=0)
    assert "".join(deltas) == reply_text("hi") and finish == ["stop"]
    assert "🙂" in deltas and "🚀" in deltas  # each emoji is one whole delta
    assert not any("\ufffd" in d for d in deltas)


def test_raw_sse_framing(chat):
    conn = http.client.HTTPConnection("127.0.0.1", chat.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps({"messages": user("hi"), "stream": True,
                                                             "temperature": 0}))
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
    events = r.read().decode().split("\n\n")
    conn.close()
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(p["object"] == "chat.completion.chunk" and p["id"] == payloads[0]["id"] for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_models_health_and_ui(chat):
    models = client_for(chat).models.list()
    assert [m.id for m in models.data] == ["nanochat-sft-tiny-step300"]
    status, headers, body = request(chat.port, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["workers"] == 2
    status, headers, body = request(chat.port, "GET", "/")
    assert status == 200 and b"<html" in body and "script-src 'sha256-" in headers["content-security-policy"]
    status, _, body = request(chat.port, "GET", "/nope")
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}


# -----------------------------------------------------------------------------
# validation

OK = {"model": "m", "messages": user("hi"), "max_tokens": 5}
MATRIX = [  # (changes to OK, expected param); None in changes deletes the key
    ({"messages": None}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "be nice"}]}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "developer", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
    ({"messages": [{"role": "assistant", "content": "hello"}]}, "messages[0].role"),
    ({"messages": user("a") + [{"role": "assistant", "content": "b"}]}, "messages[1].role"),
    ({"messages": user("a") + user("b")}, "messages[1].role"),
    ({"messages": user("a") + [{"role": "system", "content": "late"}]}, "messages[1].role"),
    ({"messages": user("x " * 200), "max_tokens": None}, "messages"),  # prompt alone over the 128-token context
    ({"max_tokens": 124}, "max_tokens"),  # 5 prompt tokens + 124 > the 128-token context
    ({"max_tokens": None, "max_completion_tokens": 500}, "max_completion_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": "abc"}, "seed"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": 3}, "stream_options"),
    ({"n": 2}, "n"),
    ({"model": 7}, "model"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"stop": ["\n"]}, "stop"),
]


def _apply(changes):
    body = dict(OK)
    for k, v in changes.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


@pytest.mark.parametrize("changes,param", MATRIX, ids=[p + ":" + ",".join(c) for c, p in MATRIX])
def test_validation_function(tok, changes, param):
    with pytest.raises(APIError) as e:
        validate_chat_request(_apply(changes), tok, context_len=128, defaults=DEFAULTS)
    assert e.value.param == param and e.value.status == 400


def test_validation_matrix_over_http(chat):
    conn = http.client.HTTPConnection("127.0.0.1", chat.port, timeout=30)
    for changes, param in MATRIX:
        status, _, body = request(chat.port, "POST", "/v1/chat/completions", _apply(changes), conn=conn)
        assert status == 400, (changes, body)
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    conn.close()
    status, _, body = request(chat.port, "POST", "/v1/chat/completions", _apply({"max_tokens": 124}))
    # the context message names both numbers: prompt tokens + max_tokens and the context
    assert "128" in body["error"]["message"] and "124" in body["error"]["message"] and "5 prompt" in body["error"]["message"]
    assert body["error"]["code"] == "context_length_exceeded"


def test_valid_edge_values_are_accepted(tok):
    ok = validate_chat_request({"messages": [{"role": "system", "content": "s"}] + user("q"), "temperature": 0,
                                "top_p": 1, "seed": 0, "max_tokens": 3.0}, tok, 128, DEFAULTS)
    assert (ok.temperature, ok.top_p, ok.seed, ok.max_tokens, ok.stream) == (0.0, 1.0, 0, 3, False)
    # system is folded into the first user turn exactly as the tokenizer renders it
    assert ok.prompt_ids == tok.render_for_completion({"messages": [{"role": "user", "content": "s\n\nq"}]})
    default = validate_chat_request({"messages": user("q")}, tok, 128, DEFAULTS)
    assert default.max_tokens == 128 - len(default.prompt_ids)  # the rest of the context


def test_bad_bodies_and_size_cap(chat):
    for raw in (b"{", b"not json", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000, b'"just a string"', b"[]"):
        status, _, body = request(chat.port, "POST", "/v1/chat/completions", raw)
        assert status == 400 and body["error"]["param"] is None, raw[:20]
    status, _, body = request(chat.port, "POST", "/v1/chat/completions", b"x" * (1024 * 1024 + 1))
    assert status == 413 and body["error"]["code"] == "body_too_large"


def _random_value(rng, depth=0):
    kinds = ["none", "bool", "int", "bigint", "float", "str", "weird", "list", "dict"]
    kind = rng.choice(kinds if depth < 3 else kinds[:7])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-5, 300)
    if kind == "bigint":
        return rng.choice([2**63, -2**70, 10**30])
    if kind == "float":
        return rng.choice([0.5, -1.5, 1e308, float("inf"), float("nan"), 3.0])
    if kind == "str":
        return rng.choice(["", "user", "assistant", "system", "hi", "x" * 300, "<|bos|>", "🙂"])
    if kind == "weird":
        return rng.choice(["\ud800", "\x00", "\udfff🙂"])
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["role", "content", "x", "messages"]): _random_value(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def malformed_bodies(n, seed=0):
    """n request bodies (bytes), each a valid request with 1-3 random corruptions."""
    rng = random.Random(seed)
    keys = ["messages", "model", "stream", "temperature", "top_p", "top_k", "max_tokens", "seed", "n",
            "stream_options", "max_completion_tokens", "stop"]
    for _ in range(n):
        body = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
                "max_tokens": 4}
        for _ in range(rng.randint(1, 3)):
            if not isinstance(body, dict):
                break  # already replaced by a non-object
            messages = body.get("messages") if isinstance(body.get("messages"), list) else None
            op = rng.randrange(6)
            if op == 0:
                body[rng.choice(keys)] = _random_value(rng)
            elif op == 1 and body:
                body.pop(rng.choice(list(body)))
            elif op == 2 and messages:
                messages[rng.randrange(len(messages))] = _random_value(rng)
            elif op == 3 and messages and isinstance(messages[-1], dict):
                messages[rng.randrange(len(messages))] = {**messages[-1], rng.choice(["role", "content", "name"]):
                                                          _random_value(rng)}
            elif op == 4:
                body = _random_value(rng)
            elif messages is not None:
                body["messages"] = messages * rng.randint(0, 3)  # empty, or repeated roles
        raw = json.dumps(body).encode("utf-8", "surrogatepass") if rng.random() < 0.9 else \
            json.dumps(body).encode()[: rng.randint(0, 40)]  # sometimes truncated JSON
        yield raw


def test_fuzz_1000_malformed_bodies_never_5xx(chat):
    conn = http.client.HTTPConnection("127.0.0.1", chat.port, timeout=60)
    statuses = {}
    for raw in malformed_bodies(1000):
        status, _, body = request(chat.port, "POST", "/v1/chat/completions", raw, conn=conn)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (raw[:200], body)
        if status != 200:
            assert set(body["error"]) == {"message", "type", "param", "code"}, body
    conn.close()
    assert statuses.get(400, 0) >= 700, statuses  # the generator really produces malformed requests
    assert chat.health()["errors"] == 0


# -----------------------------------------------------------------------------
# auth, overload, disconnect (the babbling model on 1 worker + 1 queue slot, with an API key)


def test_api_key(babble):
    body = {"messages": user("hi"), "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, _, resp = request(babble.port, "POST", "/v1/chat/completions", body, headers)
        assert status == 401 and resp["error"]["code"] == "invalid_api_key"
    assert request(babble.port, "GET", "/v1/models")[0] == 401
    assert request(babble.port, "POST", "/v1/chat/completions", body, AUTH)[0] == 200
    assert request(babble.port, "GET", "/health")[0] == 200  # health needs no key
    with pytest.raises(openai.AuthenticationError):
        client_for(babble, "wrong").models.list()


def open_stream(server, max_tokens=3000, headers=AUTH):
    """Start a streaming request on a raw socket and read until the first content chunk arrived."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = json.dumps({"messages": user("go"), "stream": True, "max_tokens": max_tokens, "temperature": 1.0})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    received = b""
    while received.count(b'"content"') < 3:  # the role chunk plus two content chunks
        data = sock.recv(65536)
        assert data, "the server closed the stream early"
        received += data
    assert received.startswith(b"HTTP/1.1 200")
    return sock


def test_overload_gets_429_at_once_and_nothing_hangs(babble):
    before = babble.health()
    a = open_stream(babble)  # occupies the only worker
    b = socket.create_connection(("127.0.0.1", babble.port), timeout=30)  # waits in the only queue slot
    body = json.dumps({"messages": user("queued"), "max_tokens": 5})
    b.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    wait_for(lambda: babble.health()["queued"] == 1)
    t0 = time.time()
    status, headers, resp = request(babble.port, "POST", "/v1/chat/completions", {"messages": user("c")}, AUTH)
    assert status == 429 and time.time() - t0 < 5
    assert headers.get("retry-after") == "1" and resp["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        client_for(babble, KEY).chat.completions.create(model="m", messages=user("d"), max_tokens=3)
    a.close()  # the stream's client leaves: its worker moves on to the queued request, which completes
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        data = b.recv(65536)
        assert data, "the queued request's connection closed without a response"
        reply += data
    b.close()
    assert reply.startswith(b"HTTP/1.1 200")
    after = wait_for(lambda: (lambda h: h if h["busy"] == 0 and h["queued"] == 0 else None)(babble.health()))
    assert after["rejected"] - before["rejected"] == 2
    assert after["cancelled"] - before["cancelled"] == 1 and after["served"] - before["served"] == 1


def test_disconnect_frees_the_worker(babble):
    before = babble.health()
    sock = open_stream(babble, max_tokens=4000)  # would take many seconds to finish
    assert babble.health()["busy"] == 1
    latencies = []
    for _ in range(10):  # /health never waits on the model while a stream runs
        t0 = time.time()
        assert babble.health()["busy"] == 1
        latencies.append(time.time() - t0)
    assert max(latencies) < 1.0, latencies
    t0 = time.time()
    sock.close()
    after = wait_for(lambda: (lambda h: h if h["busy"] == 0 else None)(babble.health()), timeout=10)
    freed_in = time.time() - t0
    assert after["cancelled"] == before["cancelled"] + 1 and after["served"] == before["served"]
    # the freed (only) worker serves the next request
    status, _, resp = request(babble.port, "POST", "/v1/chat/completions", {"messages": user("next"),
                                                                             "max_tokens": 3}, AUTH)
    assert status == 200 and resp["usage"]["completion_tokens"] == 3
    assert freed_in < 5, freed_in


def test_disconnect_of_nonstream_request_frees_the_worker(babble):
    before = babble.health()
    sock = socket.create_connection(("127.0.0.1", babble.port), timeout=30)
    body = json.dumps({"messages": user("long"), "max_tokens": 4000})
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    wait_for(lambda: babble.health()["busy"] == 1)
    sock.close()
    after = wait_for(lambda: (lambda h: h if h["busy"] == 0 else None)(babble.health()), timeout=10)
    assert after["cancelled"] == before["cancelled"] + 1 and after["served"] == before["served"]
