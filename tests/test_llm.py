"""The LLM captioner over real HTTP, against a loopback server that speaks the chat-completions protocol.

The server plays a script of replies (a caption, an HTTP error, a delay) and records every request, so the tests see
exactly what the `openai` client sent: model, sampling settings, the prompt, the key in the Authorization header."""
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from soundscaper.captions import (MAX_FALLBACK_CHARS, CaptionError, LLMCaptioner, caption_inputs,
                                  caption_predictions, read_captions, summarise_captions, template_caption)
from soundscaper.cli.caption import caption_main
from soundscaper.labels import EVENTS, PAQS, SCENES

FAKE_KEY = "sk-test-FAKEKEY-0123456789abcdefXYZ"
DEMO_P = [5.695611471310257912e-04, 9.985634684562683105e-01, 3.673175582662224770e-03, 4.032098501920700073e-02,
          3.349301591515541077e-02, 2.879400253295898438e-01, 4.966872036457062073e-01, 4.888364672660827637e-01,
          9.953504800796508789e-01, 6.862598657608032227e-01, 7.989198565483093262e-01, 9.982454776763916016e-01,
          1.640747338533401489e-01, 1.640405356884002686e-01, 9.998320341110229492e-01]
DEMO_R = [4.108083, 3.0842495, 2.0122054, 3.4061074, 2.813982, 4.00237, 1.8789594, 2.4632325]
GOOD = ("In this park, you can hear birds and other animals, people talking and some background noise. "
        "It feels pleasant and calm, and not chaotic, annoying or monotonous.")
BAD = "In this park, dogs are barking near a siren. It feels chaotic."


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 that answers from a script.

    Script items: a str (a reply), {"status": 429, "headers": {...}, "body": {...}} (an error), {"sleep": s} (hang
    for s seconds, then answer 'late'), {"json": obj} (HTTP 200 with `obj` as the whole body) or {"raw": text,
    "type": content type} (HTTP 200 with a body that is not a chat completion). Errors carry `retry-after-ms: 1`
    unless the item sets headers, so the client's own retries do not slow the tests down. When the script runs out,
    every request gets HTTP 500."""

    def __init__(self, script):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args): pass

            def _send(self, status, body, headers=None, ctype="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items(): self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    item = server.script.pop(0) if server.script else {"status": 500}
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if isinstance(item, dict) and "sleep" in item:
                    time.sleep(item["sleep"]); item = "late"
                if isinstance(item, dict) and "json" in item:
                    return self._send(200, item["json"])
                if isinstance(item, dict) and "raw" in item:
                    return self._send(200, item["raw"], ctype=item.get("type", "text/plain"))
                if isinstance(item, dict):
                    err = item.get("body", {"error": {"message": f"scripted {item['status']}", "type": "server_error"}})
                    if err == "echo-key":
                        err = {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}"}}
                    return self._send(item["status"], err, item.get("headers", {"retry-after-ms": "1"}))
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "?"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": item}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start(); return self

    def __exit__(self, *exc):
        self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def demo():
    return caption_inputs("park", DEMO_P, DEMO_R, clip="demo")


def _llm(url, **kw):
    kw = {"model": "test-model", "timeout": 5, "retries": 3, "api_key": FAKE_KEY} | kw
    return LLMCaptioner(base_url=url, **kw)


def test_faithful_caption_is_kept_and_request_follows_the_paper(demo):
    with ChatServer([f'"{GOOD}"\n']) as srv:
        c = _llm(srv.url, temperature=1.0, max_tokens=250)(demo)
    assert (c.captioner, c.check, c.fallback, c.attempts, c.model) == ("llm", "pass", "", 1, "test-model")
    assert c.caption == GOOD                                    # quotes and the newline stripped
    (req,) = srv.requests
    assert req["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    body = req["body"]
    assert body["model"] == "test-model" and body["temperature"] == 1.0 and body["max_tokens"] == 250
    (msg,) = body["messages"]
    assert msg["role"] == "system"
    assert "['Animal', 'Human sounds', 'Speech', 'Bird'" in msg["content"]
    assert "[1.0, 1.0, 1.0, 1.0, 0.8, 0.69, 0.5, 0.49]" in msg["content"]
    assert "'I Agree with pleasant', 'I Disagree with chaotic'" in msg["content"]


def test_user_role(demo):
    with ChatServer([GOOD]) as srv:
        _llm(srv.url, role="user")(demo)
    assert srv.requests[0]["body"]["messages"][0]["role"] == "user"


def test_unfaithful_caption_is_replaced_with_the_reason(demo):
    with ChatServer([BAD]) as srv:
        c = _llm(srv.url)(demo)
    assert c.captioner == "template" and c.check == "pass" and c.caption == template_caption(demo)
    assert c.fallback.startswith("LLM caption failed the check (")
    assert "names sources not among the kept events: barking, dogs, sirens" not in c.fallback
    assert "names sources not among the kept events: barking, dogs, siren" in c.fallback
    assert "asserts 'chaotic' (the listener disagrees)" in c.fallback
    assert "does not state 'pleasant'" in c.fallback
    assert BAD in c.fallback                                    # the rejected caption is kept for inspection


def _retry_counts(srv):
    "The openai client's own retry counter on each request it sent."
    return [r["headers"].get("x-stainless-retry-count") for r in srv.requests]


def test_429_then_success_is_retried_by_the_client(demo):
    script = [{"status": 429, "headers": {"Retry-After": "0.05"}}, {"status": 429}, GOOD]
    with ChatServer(script) as srv:
        t0 = time.monotonic()
        c = _llm(srv.url)(demo)
        dt = time.monotonic() - t0
    assert (c.captioner, c.attempts, c.caption, c.fallback) == ("llm", 3, GOOD, "")
    assert _retry_counts(srv) == ["0", "1", "2"]                 # the retries are the openai client's (max_retries)
    assert dt >= 0.05                                            # and it honours the server's Retry-After


def test_server_errors_fall_back_after_the_retries(demo):
    with ChatServer([{"status": 500}, {"status": 502}, {"status": 503}, {"status": 500}, GOOD]) as srv:
        c = _llm(srv.url, retries=3)(demo)
    assert _retry_counts(srv) == ["0", "1", "2", "3"]
    assert c.captioner == "template" and c.check == "pass" and c.attempts == 4
    assert c.fallback.startswith("LLM unavailable after 4 attempt(s): HTTP 500")


def test_timeout_falls_back(demo):
    with ChatServer([{"sleep": 1.5}, {"sleep": 1.5}]) as srv:
        t0 = time.monotonic()
        c = _llm(srv.url, timeout=0.3, retries=1)(demo)
        dt = time.monotonic() - t0
    assert c.captioner == "template" and c.check == "pass" and c.attempts == 2
    assert _retry_counts(srv) == ["0", "1"]
    assert c.fallback.startswith("LLM unavailable after 2 attempt(s): APITimeoutError"), c.fallback
    assert dt < 2.5                                              # two 0.3-s timeouts and one back-off (<= 0.5 s)


HTML = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>captive portal</body></html>"


@pytest.mark.parametrize("item,why", [
    ({"raw": '{"choices": [{"message": {"content": "In this park', "type": "application/json"}, "not JSON"),
    ({"raw": HTML, "type": "text/html; charset=utf-8"}, "not JSON (text/html"),
    ({"json": {}}, "no choices"),
    ({"json": {"choices": []}}, "no choices"),
    ({"json": {"choices": [{"index": 0, "message": {"role": "assistant"}}]}}, "no message content"),
    ({"json": ["In this park"]}, "no choices"),
], ids=["invalid-json", "html", "empty-object", "empty-choices", "no-content", "json-list"])
def test_unusable_replies_fall_back_with_the_reason(demo, item, why):
    with ChatServer([item, GOOD]) as srv:
        llm = _llm(srv.url)
        c = llm(demo)
        again = llm(demo)                                         # the run goes on: the next clip asks again
    assert c.captioner == "template" and c.check == "pass" and c.caption == template_caption(demo)
    assert c.fallback.startswith("unusable LLM reply after 1 attempt(s): " + why), c.fallback
    assert len(c.fallback) <= MAX_FALLBACK_CHARS
    assert (again.captioner, again.caption) == ("llm", GOOD) and len(srv.requests) == 2


def test_huge_replies_are_not_kept(demo):
    big = "In this park, " + "birds " * 1_000_000                 # a 6 MB reply
    long = "In this park, " + "birds " * 20_000                   # 120 kB: read, but far too long for a caption
    with ChatServer([big, long]) as srv:
        llm = _llm(srv.url)
        c1, c2 = llm(demo), llm(demo)
    assert c1.fallback.startswith("unusable LLM reply after 1 attempt(s): larger than"), c1.fallback[:200]
    assert c2.fallback.startswith("LLM caption failed the check (too long"), c2.fallback[:200]
    for c in (c1, c2):
        assert c.captioner == "template" and c.check == "pass"
        assert len(c.fallback) <= MAX_FALLBACK_CHARS
        assert len(json.dumps(c.record())) < 4 * MAX_FALLBACK_CHARS + len(c.caption) + 1000


@pytest.mark.parametrize("url", ["http://llm.example.org/v1", "http://192.168.1.20:8080/v1", "http://10.0.0.1/v1",
                                 "http://user:pw@llm.example.org/v1"])
def test_plain_http_to_another_host_is_refused(url):
    with pytest.raises(CaptionError, match="plain http") as err:
        LLMCaptioner(url, api_key=FAKE_KEY)
    assert "allow_insecure_http" in str(err.value) and "pw" not in str(err.value)
    assert LLMCaptioner(url, api_key=FAKE_KEY, allow_insecure_http=True).base_url == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1",
                                 "http://127.1.2.3/v1", "https://llm.example.org/v1"])
def test_https_and_loopback_http_are_allowed(url):
    LLMCaptioner(url, api_key=FAKE_KEY)


@pytest.mark.parametrize("url", ["ftp://llm.example.org/v1", "llm.example.org/v1", "http:///v1"])
def test_malformed_llm_urls_are_refused(url):
    with pytest.raises(CaptionError, match="http"):
        LLMCaptioner(url, api_key=FAKE_KEY)


def test_client_errors_are_not_retried_and_keys_are_redacted(demo):
    with ChatServer([{"status": 401, "body": "echo-key"}, GOOD]) as srv:
        c = _llm(srv.url)(demo)
    assert len(srv.requests) == 1 and c.attempts == 1 and c.captioner == "template"
    assert c.fallback.startswith("LLM unavailable after 1 attempt(s): HTTP 401")
    assert "<redacted>" in c.fallback and FAKE_KEY not in c.fallback and "FAKEKEY" not in c.fallback


def test_unreachable_llm_is_not_asked_again(demo):
    with ChatServer([]) as srv:                                  # every request: HTTP 500
        llm = _llm(srv.url, retries=0, give_up_after=2)
        cs = [llm(demo) for _ in range(4)]
    assert len(srv.requests) == 2
    assert [c.attempts for c in cs] == [1, 1, 0, 0]
    assert cs[-1].fallback.startswith("LLM not asked: 2 clips in a row")
    assert [summarise_captions([c.record() for c in cs]).kinds[k] for k in ("LLM unavailable", "LLM not asked")] \
        == [2, 2]
    assert all(c.check == "pass" for c in cs)


def _predictions(n):
    "A synthetic predictions table in soundscaper.inference's layout."
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        p = rng.beta(0.5, 0.7, len(EVENTS))
        scene = SCENES[i % 3]
        rows.append({"clip": f"clip{i}", "path": f"/audio/clip{i}.wav", "scene": scene,
                     **{f"scene_{s}": float(s == scene) for s in SCENES}, **dict(zip(EVENTS, p)),
                     "ISOPleasant": 0.1, "ISOEventful": -0.1, **dict(zip(PAQS, rng.uniform(1, 5, len(PAQS)))), "model": "synthetic"})
    return pd.DataFrame(rows)


def test_cli_over_http_and_no_key_anywhere(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    preds = _predictions(4)
    preds.loc[0, "scene"] = "park"
    pin = tmp_path / "preds.csv"
    preds.to_csv(pin, index=False)
    inp0 = caption_inputs("park", preds.loc[0, list(EVENTS)], preds.loc[0, list(PAQS)], clip="clip0")
    faithful = template_caption(inp0)                            # a reply that is certainly faithful to clip0
    script = [faithful, BAD.replace("park", "street"), {"status": 429}, "In this public square, 3 birds.",
              {"status": 401, "body": "echo-key"}]
    out = tmp_path / "caps.jsonl"
    for name in ("", "openai", "httpx", "httpcore", "soundscaper"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    with ChatServer(script) as srv:
        rc = caption_main([str(pin), "--llm", srv.url, "--model", "m", "--out", str(out), "--retries", "1",
                           "--timeout", "5"])
    assert rc == 0
    assert all(r["headers"]["authorization"] == f"Bearer {FAKE_KEY}" for r in srv.requests)   # the key was used
    rows = read_captions(out)
    assert rows["clip"].tolist() == ["clip0", "clip1", "clip2", "clip3"]
    assert rows["captioner"].tolist() == ["llm", "template", "template", "template"]
    assert (rows["check"] == "pass").all()
    assert rows["fallback"][1].startswith("LLM caption failed the check")
    assert "contains digits" in rows["fallback"][2]              # 429 retried, then the '3 birds' reply
    assert rows["fallback"][3].startswith("LLM unavailable after 1 attempt(s): HTTP 401")
    captured = capsys.readouterr()
    everything = [captured.out, captured.err, caplog.text, out.read_text(),
                  "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)]
    assert any(r.name.startswith("openai") for r in caplog.records)   # the client's debug logs were captured
    for text in everything:
        assert FAKE_KEY not in text and "FAKEKEY" not in text
    assert "4 captioned" in captured.err and "3 of 4 captions fell back to the template" in captured.err


def test_every_clip_falling_back_is_reported_and_fails(tmp_path, capsys):
    """All clips fell back (an endpoint that only returns HTML): the summary says so and the exit status is 1;
    caption_predictions + summarise_captions give the library the same count."""
    preds = _predictions(3)
    with ChatServer([{"raw": HTML, "type": "text/html"}] * 6) as srv:
        df = caption_predictions(preds, _llm(srv.url, give_up_after=0))
        s = summarise_captions(df)
        assert (s.total, s.llm, s.fell_back, s.all_fell_back) == (3, 0, 3, True)
        assert s.kinds == {"unusable LLM reply": 3}
        assert s.line().startswith("3 of 3 captions fell back to the template (reasons: unusable LLM reply ×3")
        pin = tmp_path / "preds.csv"
        preds.to_csv(pin, index=False)
        rc = caption_main([str(pin), "--llm", srv.url, "--model", "m", "--out", str(tmp_path / "c.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1 and "3 of 3 captions fell back to the template (reasons: unusable LLM reply ×3" in err
    assert "every clip fell back" in err
    template_only = summarise_captions(caption_predictions(preds))
    assert (template_only.fell_back, template_only.all_fell_back) == (0, False)


def test_cli_refuses_plain_http_unless_allowed(tmp_path, capsys):
    pin = tmp_path / "preds.csv"
    _predictions(1).to_csv(pin, index=False)
    with pytest.raises(CaptionError, match="--allow-http"):
        caption_main([str(pin), "--llm", "http://llm.example.org/v1"])
    rc = caption_main([str(pin), "--llm", "http://192.0.2.1:9/v1", "--allow-http", "--retries", "0",
                       "--timeout", "0.5"])                        # allowed: the run goes on (and falls back)
    assert rc == 1 and "1 of 1 captions fell back" in capsys.readouterr().err
