"""
Chat with a nanochat checkpoint over HTTP: an OpenAI-compatible API plus a one-file web UI (ui.html).

    python -m scripts.chat_web                          # sft checkpoint, http://127.0.0.1:8000
    python -m scripts.chat_web --source base --workers 2 --port 8080
    python -m scripts.chat_web --host 0.0.0.0 --api-key "$KEY"   # expose it: only with a key
    (GPU: one worker per visible GPU, each with its own model replica; torchrun is not needed.)

Endpoints:
    GET  /                      the chat UI (ui.html, no build step, works offline)
    GET  /health                {"status": "ok", "busy": ..., "queued": ...}: always fast (never waits on a model)
    GET  /v1/models             the one model this server serves
    POST /v1/chat/completions   OpenAI's chat API: messages, stream, temperature, top_p, max_tokens, seed
                                (plus top_k as an extension); SSE chunks ending with `data: [DONE]`

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="nanochat", messages=[{"role": "user", "content": "hi"}])

Tool calls, tool outputs and thinking are not hidden: they arrive inline in the assistant text as
<tool>12*3</tool><output>36</output> and <think>...</think> (nanochat/chat_stream.py); the UI styles them.
Those markers come back as plain text when a client sends the conversation again.

Generation runs in a pool of worker threads (torch releases the GIL inside its ops), never on the event loop,
so /health and new connections stay responsive while streams run. Requests beyond workers + --max-queue get
429 with Retry-After at once. A client that disconnects sets its job's cancel flag; the worker checks it after
every decode step, so it is free again within one step.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

import torch

from nanochat.chat_stream import TurnDecoder, inline_markup

log = logging.getLogger("nanochat.web")
UI_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ui.html")

# -----------------------------------------------------------------------------
# errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}


class APIError(Exception):
    def __init__(self, message, param=None, code="invalid_value", status=400, kind="invalid_request_error",
                 headers=None):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind
        self.headers = headers or {}

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -----------------------------------------------------------------------------
# request validation: a pure function of the JSON body (tested on its own and by fuzzing)

ROLES = ("system", "user", "assistant")
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "stop", "logprobs", "top_logprobs",
               "logit_bias", "response_format")


@dataclass
class ChatRequest:
    prompt_ids: list
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stream: bool
    include_usage: bool
    messages: list = field(repr=False)


def _number(body, name, lo, hi, default, lo_open=False):
    """A finite JSON number (not a bool) in [lo, hi] ((lo, hi] with lo_open), or the default when absent/null."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(f"{name} must be a number, got {json.dumps(value)[:40]}", name, "invalid_type")
    if value < lo or value > hi or (lo_open and value == lo):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise APIError(f"{name}={value} is out of range: it must be in {interval}", name)
    return float(value)


def _integer(body, name, lo, hi, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # JSON has one number type: 100.0 is an integer
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(f"{name} must be an integer, got {json.dumps(value)[:40]}", name, "invalid_type")
    if value < lo or (hi is not None and value > hi):
        raise APIError(f"{name}={value} is out of range: it must be >= {lo}" + (f" and <= {hi}" if hi else ""), name)
    return value


def _check_text(text, param):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry lone surrogates ("\\ud800") that are not text
        raise APIError(f"{param} contains invalid Unicode (a lone surrogate); send valid UTF-8 text", param)


def _validate_messages(messages):
    """Check roles and contents; returns the messages (folded system message is the tokenizer's job)."""
    if messages is None:
        raise APIError("messages is required: a list of {role, content} objects", "messages", "missing_field")
    if not isinstance(messages, list):
        raise APIError("messages must be a list of {role, content} objects", "messages", "invalid_type")
    if not messages:
        raise APIError("messages is empty: send at least one user message", "messages")
    for i, m in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(m, dict):
            raise APIError(f"{p} must be an object with role and content", p, "invalid_type")
        role = m.get("role")
        if role is None:
            raise APIError(f"{p}.role is required", f"{p}.role", "missing_field")
        if role not in ROLES:
            raise APIError(f"{p}.role {json.dumps(role)[:40]} is not supported: use system, user or assistant",
                           f"{p}.role")
        content = m.get("content")
        if content is None:
            raise APIError(f"{p}.content is required", f"{p}.content", "missing_field")
        if not isinstance(content, str):
            raise APIError(f"{p}.content must be a string (content-part lists are not supported)",
                           f"{p}.content", "invalid_type")
        _check_text(content, f"{p}.content")
    rest = messages[1:] if messages[0]["role"] == "system" else messages
    if not rest:
        raise APIError("messages has only a system message: add a user message", "messages")
    for i, m in enumerate(rest):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            j = i + len(messages) - len(rest)
            raise APIError(f"messages[{j}].role is {m['role']!r} but {want!r} was expected: after an optional "
                           f"first system message, roles must alternate user/assistant", f"messages[{j}].role")
    if rest[-1]["role"] != "user":
        raise APIError("the last message must be from the user (the model writes the next assistant turn)",
                       f"messages[{len(messages) - 1}].role")
    return messages


def validate_chat_request(body, tokenizer, context_len, defaults):
    """
    body: the parsed JSON. defaults: dict(temperature, top_k, max_tokens) from the command line.
    Returns a ChatRequest or raises APIError (400) naming the offending field in `param`.
    """
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", None, "invalid_type")
    messages = _validate_messages(body.get("messages"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError("model must be a string", "model", "invalid_type")
    for name in UNSUPPORTED:
        if body.get(name):
            raise APIError(f"{name} is not supported by this server; remove it", name, "unsupported_parameter")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise APIError("stream must be true or false", "stream", "invalid_type")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not isinstance(options.get("include_usage",
                                                                                              False), bool)):
        raise APIError("stream_options must be an object like {\"include_usage\": true}", "stream_options",
                       "invalid_type")
    _integer(body, "n", 1, 1, 1)  # one choice per request
    temperature = _number(body, "temperature", 0.0, 2.0, defaults["temperature"])
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0, lo_open=True)
    top_k = _integer(body, "top_k", 1, None, defaults["top_k"])
    seed = _integer(body, "seed", 0, 2**63 - 1, None)
    max_name = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = _integer(body, max_name, 1, None, None)

    prompt_ids = tokenizer.render_for_completion({"messages": messages})
    room = context_len - len(prompt_ids)
    if max_tokens is None:
        if room < 1:
            raise APIError(f"the conversation is {len(prompt_ids)} tokens but this model's context is {context_len} "
                           f"tokens; shorten the messages", "messages", "context_length_exceeded")
        max_tokens = min(room, defaults["max_tokens"])
    elif len(prompt_ids) + max_tokens > context_len:
        raise APIError(f"this model's context is {context_len} tokens but the request needs {len(prompt_ids)} prompt "
                       f"tokens + {max_tokens} max_tokens = {len(prompt_ids) + max_tokens}; shorten the messages or "
                       f"lower {max_name}", max_name, "context_length_exceeded")
    return ChatRequest(
        prompt_ids=prompt_ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        seed=secrets.randbelow(2**31) if seed is None else seed, stream=bool(stream),
        include_usage=bool(options and options.get("include_usage")), messages=messages,
    )


# -----------------------------------------------------------------------------
# the worker pool: generation off the event loop, bounded admission, cooperative cancellation


class Job:
    """One request's generation. The worker thread emits items into an asyncio queue on the server's loop."""

    def __init__(self, request, loop):
        self.request = request
        self.loop = loop
        self.items = asyncio.Queue()  # ("delta", text) ... then ("done", finish_reason, completion_tokens)
        self.cancelled = threading.Event()

    def emit(self, item):
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            self.cancelled.set()

    def cancel(self):
        self.cancelled.set()


class WorkerPool:
    """
    len(engines) worker threads, each owning one Engine (a model replica per GPU, or engines sharing one CPU
    model: the model is read-only at inference). At most workers + max_queue jobs are admitted at a time;
    submit() returns False beyond that, so the server can answer 429 at once instead of queueing forever.
    """

    def __init__(self, engines, max_queue):
        self.capacity = len(engines) + max_queue
        self.jobs = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0  # running + waiting
        self.running = 0
        self.stats = dict(served=0, cancelled=0, rejected=0, errors=0)
        self.threads = [threading.Thread(target=self._work, args=(e,), daemon=True, name=f"chat-worker-{i}")
                        for i, e in enumerate(engines)]
        for t in self.threads:
            t.start()

    def submit(self, job):
        with self.lock:
            if self.admitted >= self.capacity:
                self.stats["rejected"] += 1
                return False
            self.admitted += 1
        self.jobs.put(job)
        return True

    def health(self):
        with self.lock:
            return dict(workers=len(self.threads), busy=self.running, queued=self.admitted - self.running,
                        **self.stats)

    def close(self):
        for _ in self.threads:
            self.jobs.put(None)

    def _work(self, engine):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self.lock:
                self.running += 1
            outcome = "cancelled"
            try:
                if not job.cancelled.is_set():  # the client may have left while the job waited
                    outcome = generate(engine, job)
            except Exception as e:  # a bug or an OOM: tell this client, keep the worker alive for the next
                log.exception("generation failed")
                outcome = "errors"
                job.emit(("error", f"generation failed: {type(e).__name__}"))
            finally:
                with self.lock:
                    self.running -= 1
                    self.admitted -= 1
                    self.stats[outcome] += 1


def generate(engine, job):
    """Run one request on one engine, emitting text deltas; returns "served" or "cancelled"."""
    r = job.request
    turn = TurnDecoder(engine.tokenizer)
    steps = engine.generate(r.prompt_ids, num_samples=1, max_tokens=r.max_tokens, temperature=r.temperature,
                            top_k=r.top_k, top_p=r.top_p, seed=r.seed)
    try:
        for column, _ in steps:  # one decode step per iteration: the cancel flag is checked every step
            if job.cancelled.is_set():
                return "cancelled"
            text = "".join(inline_markup(*e) for e in turn.push(column[0]))
            if text:
                job.emit(("delta", text))
            if turn.stopped:
                break
    finally:
        steps.close()
    text = "".join(inline_markup(*e) for e in turn.finish())
    if text:
        job.emit(("delta", text))
    job.emit(("done", "stop" if turn.stopped else "length", turn.num_tokens))
    return "served"


# -----------------------------------------------------------------------------
# the HTTP app


def content_security_policy(html):
    """Allow exactly the UI's own inline script (by hash): injected inline handlers can never run."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join("'sha256-%s'" % base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts)
    script_src = hashes or "'none'"
    return (f"default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; "
            f"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(pool, tokenizer, model_id, context_len, defaults, api_key=None, cors_origins=(),
               max_body_bytes=1 << 20, log_conversations=False, ui_path=UI_PATH):
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="nanochat", docs_url=None, redoc_url=None, openapi_url=None)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    with open(ui_path, encoding="utf-8") as f:
        ui_html = f.read()
    ui_headers = {"Content-Security-Policy": content_security_policy(ui_html), "X-Content-Type-Options": "nosniff",
                  "Cache-Control": "no-store"}

    @app.exception_handler(APIError)
    async def api_error(request, e):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e):  # 404/405 in the same shape as everything else
        return JSONResponse(APIError(str(e.detail), code=None, status=e.status_code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def server_error(request, e):
        log.exception("unhandled error")
        return JSONResponse(APIError("internal server error", code=None, status=500, kind="server_error").body(),
                            status_code=500)

    def check_auth(request):
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(token.encode("utf-8", "replace"), api_key.encode("utf-8")):
            raise APIError("missing or wrong API key: send 'Authorization: Bearer <key>'", None, "invalid_api_key",
                           status=401, kind="authentication_error")

    async def read_json(request):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise APIError(f"request body is over {max_body_bytes} bytes", None, "body_too_large", status=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise APIError(f"request body is over {max_body_bytes} bytes", None, "body_too_large", status=413)
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise APIError("the request body is not valid JSON", None, "invalid_json")

    @app.get("/")
    async def index():
        return HTMLResponse(ui_html, headers=ui_headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, **pool.health()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                            "owned_by": "nanochat", "context_length": context_len}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_auth(request)
        req = validate_chat_request(await read_json(request), tokenizer, context_len, defaults)
        job = Job(req, asyncio.get_running_loop())
        if not pool.submit(job):
            raise APIError("the server is busy (all workers and the queue are full); retry shortly", None,
                           "rate_limit_exceeded", status=429, kind="rate_limit_error", headers={"Retry-After": "1"})
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        started = time.time()

        def log_done(finish, n):
            log.info("%s prompt=%d completion=%d finish=%s %.2fs", cid, len(req.prompt_ids), n, finish,
                     time.time() - started)
            if log_conversations:
                log.info("%s messages=%s", cid, json.dumps(req.messages, ensure_ascii=False))

        if req.stream:
            return StreamingResponse(stream_chunks(job, cid, created, model_id, log_done), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        pieces, get, next_check = [], None, time.monotonic() + 0.25
        try:
            while True:
                get = get or asyncio.ensure_future(job.items.get())
                done, _ = await asyncio.wait({get}, timeout=0.25)
                if time.monotonic() >= next_check:  # 4x a second: is the client still there?
                    next_check = time.monotonic() + 0.25
                    if await request.is_disconnected():
                        log_done("disconnected", 0)
                        return JSONResponse({}, status_code=499)
                if not done:
                    continue
                item, get = get.result(), None
                if item[0] == "delta":
                    pieces.append(item[1])
                elif item[0] == "error":
                    raise APIError(item[1], None, None, status=500, kind="server_error")
                else:
                    break
        finally:
            job.cancel()  # no-op when finished; frees the worker when we leave early
            if get is not None:
                get.cancel()
        _, finish, n = item
        log_done(finish, n)
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(req.prompt_ids), "completion_tokens": n,
                      "total_tokens": len(req.prompt_ids) + n},
        }

    return app


def sse(obj):
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def stream_chunks(job, cid, created, model_id, log_done):
    """The SSE body: a role chunk, one chunk per text delta, a finish chunk, [usage], then [DONE]."""
    def chunk(delta, finish=None):
        return sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})
    finished = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            item = await job.items.get()
            if item[0] == "delta":
                yield chunk({"content": item[1]})
            elif item[0] == "error":
                yield sse(APIError(item[1], None, None, status=500, kind="server_error").body())
                break
            else:
                _, finish, n = item
                yield chunk({}, finish)
                if job.request.include_usage:
                    p = len(job.request.prompt_ids)
                    yield sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_id,
                               "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": n,
                                                        "total_tokens": p + n}})
                log_done(finish, n)
                finished = True
                break
        yield "data: [DONE]\n\n"
    finally:
        # reached on normal end, and also when Starlette cancels us because the client disconnected
        job.cancel()
        if not finished:
            log_done("disconnected", 0)


# -----------------------------------------------------------------------------
# main: load the model (one replica per GPU), build the pool, serve


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Serve a nanochat checkpoint: OpenAI-compatible API + web UI.")
    p.add_argument("--source", default="sft", help="checkpoint stage: base|mid|sft|rl|rft|cft|dpo|distill")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: the newest under the stage)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest complete one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 127.0.0.1 keeps it on this machine")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--device", default="", help="cpu|cuda|mps (default: autodetect)")
    p.add_argument("--workers", type=int, default=0,
                   help="generation workers (default: one per GPU on cuda, 1 on cpu/mps)")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait for a worker before 429s")
    p.add_argument("--temperature", type=float, default=0.8, help="default temperature when a request gives none")
    p.add_argument("--top-k", type=int, default=50, help="default top-k when a request gives none")
    p.add_argument("--max-tokens", type=int, default=1024, help="default max_tokens when a request gives none")
    p.add_argument("--api-key", default=os.environ.get("NANOCHAT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $NANOCHAT_API_KEY, else none)")
    p.add_argument("--cors-origins", default="", help="comma-separated origins allowed by CORS (default: CORS off)")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest accepted request body in KiB")
    p.add_argument("--log-conversations", action="store_true", help="log message contents (off: only sizes)")
    args = p.parse_args(argv)
    if args.workers < 0 or args.max_queue < 0:
        p.error("--workers and --max-queue must be >= 0")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use the model")
    return args


def load_engines(args):
    """One Engine per worker: a model replica per GPU on cuda, one shared model elsewhere."""
    from nanochat.checkpoint import load_model
    from nanochat.common import keep_freed_memory, resolve_device_type
    from nanochat.engine import Engine
    device_type = resolve_device_type(args.device, flag="--device")
    if device_type == "cuda":
        n_gpu = torch.cuda.device_count()
        workers = args.workers or n_gpu
        if workers > n_gpu:
            raise SystemExit(f"--workers {workers} > {n_gpu} visible GPUs: one worker per GPU on cuda")
        loaded = [load_model(args.source, f"cuda:{i}", args.tag, args.step) for i in range(workers)]
        return [Engine(m, t) for m, t, _ in loaded], loaded[0][2], loaded[0][1]
    workers = args.workers or 1
    if device_type == "cpu":
        keep_freed_memory()  # as compute_init does: no page faults for every request's fresh buffers
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))  # workers share the cores, not oversubscribe
    model, tokenizer, meta = load_model(args.source, device_type, args.tag, args.step)
    return [Engine(model, tokenizer) for _ in range(workers)], meta, tokenizer


def main(argv=None):
    import uvicorn
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        engines, meta, tokenizer = load_engines(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    model = engines[0].model
    context_len = model.config.sequence_len  # what it was trained on; the rotary table reaches further
    model_id = f"nanochat-{args.source}-{meta.get('tag', 'model')}-step{meta.get('step', 0)}"
    defaults = dict(temperature=args.temperature, top_k=args.top_k, max_tokens=args.max_tokens)
    pool = WorkerPool(engines, args.max_queue)
    app = create_app(pool, tokenizer, model_id, context_len, defaults, api_key=args.api_key,
                     cors_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
                     max_body_bytes=args.max_body_kb * 1024, log_conversations=args.log_conversations)
    print(f"serving {model_id} ({model.num_params():,} params, context {context_len}) with {len(engines)} "
          f"worker(s), queue {args.max_queue} on http://{args.host}:{args.port}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=2)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
