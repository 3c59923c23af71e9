"""The prompted API baseline (the paper's GPT-3 rows, reference.md section 4) against any OpenAI-compatible endpoint.

Prompt: the definition + 2 positive examples encoding; temperature 0, at most 128 new tokens; the answer is the
completion stripped and cut at its first `.`. Every response is appended to a JSONL cache keyed by
sha256(endpoint kind, model, prompt) before it is used, so an interrupted run resumes without paying twice.
Requests (requests + urllib3's Retry) run in a bounded thread pool and are retried with exponential backoff on
429 and 5xx; a redirect is followed only within the endpoint's origin, so the key never reaches another host. The API key is
read from the environment variable named by `api_key_env` and is never written to a file, a log or an error.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson

from ni.data import require_split
from ni.encoding import PromptEncoder
from ni.errors import ConfigError, TkError
from ni.io import dumps_line, write_jsonl

ENCODING = "instruct_pos_2_input"
MAX_TOKENS = 128
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ApiError(TkError):
    """The endpoint refused a request for good (after retries, or a non-retryable status)."""


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: str = "chat"  # chat | completions
    concurrency: int = 4
    max_retries: int = 6
    backoff: float = 1.0  # seconds before the first retry; doubled each time
    timeout: float = 120.0


def postprocess(text: str) -> str:
    """The reference's post-processing: strip, then cut at the first `.`."""
    return text.strip().split(".")[0]


def cache_key(settings: ApiSettings, prompt: str) -> str:
    return hashlib.sha256(orjson.dumps([settings.endpoint, settings.model, prompt])).hexdigest()


class ResponseCache:
    """Append-only JSONL of {key, response}; a line cut by an interruption is ignored on the next read."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.entries: dict[str, str] = {}
        data = path.read_bytes() if path.is_file() else b""
        self.newline_first = bool(data) and not data.endswith(b"\n")  # a write cut by an interruption
        if data:
            for line in data.split(b"\n"):
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("key"), str) and isinstance(obj.get("response"), str):
                    self.entries[obj["key"]] = obj["response"]

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, response: str) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as fh:  # one write per line: appends stay whole
                line = dumps_line({"key": key, "response": response})
                fh.write(b"\n" + line if self.newline_first else line)
                self.newline_first = False
            self.entries[key] = response


def _api_key(settings: ApiSettings) -> str:
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise ConfigError(f"environment variable {settings.api_key_env}: not set (the API key)",
                          hint="Export it, or name another one with --api-key-env.")
    return key


_SESSIONS = threading.local()


def _session(settings: ApiSettings) -> Any:
    """This thread's HTTP session: retries (exponential backoff, Retry-After honoured) on 429 / 5xx and on
    connection and read errors, for POST too; redirects are never followed automatically (see `_post`)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    cached = getattr(_SESSIONS, "by_settings", {})
    if settings not in cached:
        retry = Retry(total=settings.max_retries, backoff_factor=settings.backoff, status_forcelist=RETRY_STATUS,
                      allowed_methods=frozenset({"POST"}), raise_on_status=False, respect_retry_after_header=True,
                      redirect=0)
        session = requests.Session()
        session.trust_env = False  # no ~/.netrc credentials, no proxy settings picked up behind the user's back
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        cached[settings] = session
        _SESSIONS.by_settings = cached
    return cached[settings]


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme)


def _post(settings: ApiSettings, url: str, data: bytes, headers: dict[str, str]) -> Any:
    """POST, following a 307/308 redirect only within the same origin (scheme, host, port): the key in
    `headers` never goes to another origin, and no other redirect is taken."""
    import requests

    for _ in range(5):
        try:
            resp = _session(settings).post(url, data=data, headers=headers, timeout=settings.timeout,
                                           allow_redirects=False)
        except requests.RequestException as e:
            raise ApiError(f"{url}: gave up after {settings.max_retries + 1} attempts "
                           f"(last: {type(e).__name__})") from None
        if not resp.is_redirect:
            return resp
        target = urljoin(url, resp.headers.get("location", ""))
        if resp.status_code not in (307, 308) or _origin(target) != _origin(url):
            raise ApiError(f"{url}: HTTP {resp.status_code} redirect to {_origin(target)[1] or target} not followed",
                           hint="The API key is never sent to another origin; set base_url to the final URL.")
        url = target
    raise ApiError(f"{url}: too many redirects")


def request_completion(settings: ApiSettings, key: str, prompt: str) -> str:
    """One completion's text (retries: `_session`)."""
    base = settings.base_url.rstrip("/")
    if settings.endpoint == "chat":
        url = f"{base}/chat/completions"
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
    else:
        url = f"{base}/completions"
        body = {"prompt": prompt}
    body.update(model=settings.model, temperature=0, max_tokens=MAX_TOKENS)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    resp = _post(settings, url, orjson.dumps(body), headers)
    if resp.status_code in RETRY_STATUS:
        raise ApiError(f"{url}: gave up after {settings.max_retries + 1} attempts (last: HTTP {resp.status_code})")
    if resp.status_code != 200:
        raise ApiError(f"{url}: HTTP {resp.status_code} (not retried)")
    try:
        payload = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise ApiError(f"{url}: response is not JSON") from None
    try:
        choice = payload["choices"][0]
        text = choice["message"]["content"] if settings.endpoint == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        raise ApiError(f"{url}: response field 'choices[0]': missing or malformed") from None
    return str(text or "")


def api_rows(
    settings: ApiSettings, root: str | os.PathLike[str], track: str, cache_path: Path,
    max_instances_per_task: int | None = None, progress: bool = True,
) -> list[dict[str, Any]]:
    """Prediction rows in the original's format for the test split, from the cache or the endpoint."""
    key = _api_key(settings)
    data = require_split(root, track, "test", max_instances_per_task=max_instances_per_task)
    encoder = PromptEncoder(ENCODING)
    items = [(task, inst, encoder.source(task, inst)) for task, insts in zip(data.tasks, data.instances, strict=True)
             for inst in insts]
    cache = ResponseCache(cache_path)
    todo = list(dict.fromkeys(p for _, _, p in items if cache.get(cache_key(settings, p)) is None))

    def fetch(prompt: str) -> None:
        cache.put(cache_key(settings, prompt), request_completion(settings, key, prompt))

    if todo:
        from rich.progress import Progress

        with Progress(disable=not progress) as bar, ThreadPoolExecutor(max(1, settings.concurrency)) as pool:
            job = bar.add_task(f"{settings.model}: {len(todo)} prompts ({len(items) - len(todo)} cached)",
                               total=len(todo))
            for fut in [pool.submit(fetch, p) for p in todo]:
                fut.result()
                bar.advance(job)
    rows = []
    for task, inst, prompt in items:
        response = cache.get(cache_key(settings, prompt)) or ""
        rows.append({**task.header(), "id": inst.id, "Instance": inst.to_json(), "prediction": postprocess(response)})
    return rows


def write_api_baseline(
    settings: ApiSettings, root: str | os.PathLike[str], track: str, out: Path, cache_path: Path | None = None,
    max_instances_per_task: int | None = None, progress: bool = True,
) -> int:
    cache_path = cache_path or out.with_name(out.name + ".cache.jsonl")
    return write_jsonl(out, api_rows(settings, root, track, cache_path, max_instances_per_task, progress))
