"""ChatTeacher and the consistency filter against a real HTTP server on loopback that scripts its answers."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from embedrl.tcot import prompts
from embedrl.tcot.chat_teacher import (
    API_KEY_ENV,
    ChatTeacher,
    JudgeFormatError,
    TeacherHTTPError,
    Verdict,
)
from embedrl.tcot.consistency import JudgeFailingError, filter_pairs

SECRET = "sk-test-SECRET-4242"
MODEL = "qwen3-vl-8b-instruct"

IMAGE_TCOT = (
    "<thinking>The question asks what lies on the table. A red cup sits at the left of the table. "
    '{"bbox_2d": [[100, 200, 300, 400]]}</thinking>'
    "<rethink>The box covers the cup and nothing else on the table.</rethink>"
    "<answer>a red cup</answer>"
)
VIDEO_TCOT = (
    "<thinking>The ball rolls to the right over the clip. {\"key_frames\": [1, 3]}</thinking>"
    "<rethink>Frames 1 and 3 show the start and end of the motion.</rethink>"
    "<answer>a ball rolling right</answer>"
)
TEXT_TCOT = (
    '<thinking>The caption names a dog and a frisbee. {"text_keywords": ["dog", "frisbee"]}</thinking>'
    "<rethink>Both words are in the text.</rethink>"
    "<answer>a dog catching a frisbee</answer>"
)
BROKEN_TCOT = "<thinking>no cue and no other tags"


# ----------------------------------------------------------------------------------- fake server
@dataclass
class Script:
    """Scripted replies served in order, and every request received."""

    replies: list[tuple[int, Any, float]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, status: int, body: Any, *, delay: float = 0.0) -> None:
        self.replies.append((status, body, delay))

    def completion(self, content: str) -> None:
        self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def next(self, request: dict[str, Any]) -> tuple[int, Any, float]:
        with self.lock:
            self.requests.append(request)
            if not self.replies:
                return 500, {"error": {"message": "test script has no reply left"}}, 0.0
            return self.replies.pop(0)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            status, body, delay = script.next(
                {"headers": dict(self.headers), "body": json.loads(raw), "time": time.monotonic()}
            )
            if delay:
                time.sleep(delay)
            self._send(status, body)

        def _send(self, status: int, body: Any) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _teacher(url: str, **kwargs: Any) -> ChatTeacher:
    kwargs.setdefault("api_key", SECRET)
    kwargs.setdefault("backoff", 0.05)
    kwargs.setdefault("timeout", 5)
    return ChatTeacher(url, MODEL, **kwargs)


def _parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    user = [m for m in request["body"]["messages"] if m["role"] == "user"][0]
    return user["content"]


def _decode_png(part: dict[str, Any]) -> Image.Image:
    url = part["image_url"]["url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


# ------------------------------------------------------------------------------------ write_tcot
def test_image_tcot_request_and_parse(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion(IMAGE_TCOT)
    result = _teacher(url).write_tcot(
        side="query", modality="image", text="What is on the table?",
        images=[Image.new("RGB", (32, 16), "red")], instruction="Answer the question about the image.",
    )
    assert result.ok and result.error is None and result.attempts == 1
    assert result.tcot is not None
    assert result.tcot.bbox_2d == [(100, 200, 300, 400)]
    assert result.tcot.answer == "a red cup"
    assert result.raw == IMAGE_TCOT

    (request,) = script.requests
    body = request["body"]
    assert body["model"] == MODEL
    assert body["temperature"] == 0
    assert body["max_tokens"] == 1024
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert "bbox_2d" in body["messages"][0]["content"]  # the system prompt explains the cue
    parts = _parts(request)
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 1
    assert _decode_png(images[0]).size == (32, 16)
    text = parts[-1]["text"]
    assert "What is on the table?" in text and "Answer the question about the image." in text


def test_video_frames_are_labelled_one_based(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion(VIDEO_TCOT)
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    result = _teacher(url).write_tcot(side="target", modality="video", text="", images=frames)
    assert result.tcot is not None and result.tcot.key_frames == [1, 3]

    parts = _parts(script.requests[0])
    labels = [p["text"] for p in parts[:-1] if p["type"] == "text"]
    assert labels == ["Frame 1:", "Frame 2:", "Frame 3:"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["text", "image_url"] * 3 + ["text"]
    assert [_decode_png(p).getpixel((0, 0))[0] for p in parts if p["type"] == "image_url"] == [0, 60, 120]
    assert "between 1 and 3" in script.requests[0]["body"]["messages"][0]["content"]


def test_text_modality_sends_no_images(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion(TEXT_TCOT)
    teacher = _teacher(url)
    result = teacher.write_tcot(side="query", modality="text", text="A dog catches a frisbee.", images=[])
    assert result.tcot is not None and result.tcot.text_keywords == ["dog", "frisbee"]
    assert [p["type"] for p in _parts(script.requests[0])] == ["text"]
    with pytest.raises(ValueError, match="takes no images"):
        _teacher(url).write_tcot(side="query", modality="text", text="x", images=[Image.new("RGB", (4, 4))])


def test_invalid_then_valid_asks_again_with_a_reminder(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion(BROKEN_TCOT)
    script.completion(IMAGE_TCOT)
    result = _teacher(url).write_tcot(
        side="target", modality="visdoc", text="", images=[Image.new("L", (20, 30), 255)]
    )
    assert result.ok and result.attempts == 2 and result.raw == IMAGE_TCOT
    assert len(script.requests) == 2
    messages = script.requests[1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == BROKEN_TCOT
    assert "did not follow the required format" in messages[3]["content"]


def test_invalid_twice_returns_the_error(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion(BROKEN_TCOT)
    script.completion(BROKEN_TCOT)
    result = _teacher(url).write_tcot(side="query", modality="text", text="hello")
    assert not result.ok and result.tcot is None and result.error and result.attempts == 2
    assert len(script.requests) == 2


# --------------------------------------------------------------------------------- HTTP behaviour
def test_503_is_retried_with_backoff(server: tuple[str, Script], caplog: pytest.LogCaptureFixture) -> None:
    url, script = server
    script.reply(503, {"object": "error", "message": "engine busy"})
    script.reply(503, {"object": "error", "message": "engine busy"})
    script.completion(TEXT_TCOT)
    caplog.set_level(logging.DEBUG)
    result = _teacher(url, backoff=0.05).write_tcot(side="query", modality="text", text="a dog")
    assert result.ok
    assert len(script.requests) == 3
    gaps = [b["time"] - a["time"] for a, b in zip(script.requests, script.requests[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential: backoff, then 2 x backoff
    assert "503" in caplog.text and "engine busy" in caplog.text
    assert SECRET not in caplog.text


def test_retries_exhausted_names_url_and_status(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    for _ in range(3):
        script.reply(429, {"error": {"message": f"rate limited for {SECRET}"}})  # a server echoing the key
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TeacherHTTPError) as info:
        _teacher(url, max_retries=2, backoff=0.01).judge("q", TEXT_TCOT, TEXT_TCOT)
    assert len(script.requests) == 3
    assert info.value.status == 429
    message = str(info.value)
    assert f"{url}/chat/completions" in message and "429" in message and "after 3 tries" in message
    assert SECRET not in message and SECRET not in caplog.text


def test_400_fails_fast_with_the_server_message(
    server: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    script.reply(400, {"object": "error", "message": "maximum context length is 4096 tokens", "code": 400})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TeacherHTTPError, match="maximum context length is 4096 tokens") as info:
        _teacher(url, backoff=5.0).write_tcot(side="query", modality="text", text="long")
    assert len(script.requests) == 1
    assert info.value.status == 400 and "HTTP 400" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_connection_refused_is_retried_then_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(TeacherHTTPError, match="after 2 tries") as info:
        _teacher(url, max_retries=1, backoff=0.01).judge("q", TEXT_TCOT, TEXT_TCOT)
    assert info.value.status is None and url in str(info.value) and SECRET not in str(info.value)


def test_timeout_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.reply(200, {"choices": [{"message": {"content": TEXT_TCOT}}]}, delay=0.5)
    script.completion(TEXT_TCOT)
    result = _teacher(url, timeout=0.2, backoff=0.01).write_tcot(side="query", modality="text", text="x")
    assert result.ok and len(script.requests) == 2


def test_key_from_env_and_never_in_repr(server: tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = server
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    script.completion(TEXT_TCOT)
    teacher = ChatTeacher(url, MODEL)
    teacher.write_tcot(side="query", modality="text", text="x")
    assert script.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(teacher)

    monkeypatch.delenv(API_KEY_ENV)
    script.completion(TEXT_TCOT)
    ChatTeacher(url, MODEL).write_tcot(side="query", modality="text", text="x")
    assert "Authorization" not in script.requests[1]["headers"]


# ------------------------------------------------------------------------------------------ judge
def test_judge_parses_the_verdict(server: tuple[str, Script]) -> None:
    url, script = server
    script.completion('```json\n{"relevant": true, "consistent": false, "reason": "colours differ"}\n```')
    verdict = _teacher(url).judge("Find the red cup.", IMAGE_TCOT, TEXT_TCOT)
    assert (verdict.relevant, verdict.consistent, verdict.reason) == (True, False, "colours differ")
    assert not verdict.keep
    user = script.requests[0]["body"]["messages"][1]["content"]
    assert "Find the red cup." in user and "a red cup" in user and "a dog catching a frisbee" in user
    assert '"relevant"' in script.requests[0]["body"]["messages"][0]["content"]


@pytest.mark.parametrize("reply", ["Yes, they match.", '{"relevant": "yes", "consistent": true}', "{broken"])
def test_judge_non_json_raises_format_error(server: tuple[str, Script], reply: str) -> None:
    url, script = server
    script.completion(reply)
    with pytest.raises(JudgeFormatError) as info:
        _teacher(url).judge("q", TEXT_TCOT, TEXT_TCOT)
    assert info.value.raw == reply


# -------------------------------------------------------------------------------- filter_pairs
def _pair(pair_id: str, query_tcot: str = TEXT_TCOT, pos_tcot: str = IMAGE_TCOT) -> dict[str, Any]:
    return {
        "id": pair_id, "query_text": f"query {pair_id}", "query_tcot": query_tcot, "pos_tcot": pos_tcot,
        "query_modality": "text", "pos_modality": "image",
    }


def _verdict(relevant: bool, consistent: bool, reason: str) -> str:
    return json.dumps({"relevant": relevant, "consistent": consistent, "reason": reason})


def test_filter_pairs_keeps_drops_counts_and_quarantines(
    server: tuple[str, Script], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, script = server
    pairs = [
        _pair("keep-1"),
        _pair("irrelevant"),
        _pair("conflict"),
        _pair("bad-tcot", pos_tcot=BROKEN_TCOT),  # never reaches the judge
        _pair("judge-garbage"),
        _pair("keep-2"),
    ]
    script.completion(_verdict(True, True, "same cup"))
    script.completion(_verdict(False, True, "a different scene"))
    script.completion(_verdict(True, False, "red versus blue"))
    script.completion("I think they match.")
    script.completion(_verdict(True, True, "same cup"))
    quarantine = tmp_path / "sub" / "quarantine.jsonl"
    caplog.set_level(logging.INFO)

    result = filter_pairs(pairs, _teacher(url), quarantine_path=quarantine)

    assert len(script.requests) == 5
    assert [r["id"] for r in result.kept] == ["keep-1", "keep-2"]
    assert result.counts == {
        "total": 6, "kept": 2, "irrelevant": 1, "conflicting": 1, "unparseable_tcot": 1, "judge_error": 1,
    }
    lines = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [(line["id"], line["reason"]) for line in lines] == [
        ("irrelevant", "irrelevant"),
        ("conflict", "conflicting"),
        ("bad-tcot", "unparseable_tcot"),
        ("judge-garbage", "judge_error"),
    ]
    assert lines[0]["verdict"]["reason"] == "a different scene"
    assert lines[2]["verdict"] is None and "pos_tcot" in lines[2]["detail"]
    assert lines[3]["verdict"] is None and "I think they match." in lines[3]["detail"]
    assert lines[1]["record"] == pairs[2]
    assert "kept 2/6 pairs (33.3%)" in caplog.text


def test_filter_pairs_stops_on_config_error(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.reply(401, {"error": {"message": "invalid API key"}})
    with pytest.raises(TeacherHTTPError, match="invalid API key"):
        filter_pairs([_pair("a"), _pair("b")], _teacher(url), quarantine_path=tmp_path / "q.jsonl")
    assert len(script.requests) == 1


class _FakeJudge:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def judge(self, query_text: str, query_tcot: Any, target_tcot: Any) -> Verdict:
        if self.fail:
            raise ValueError("judge is down")
        number = int(query_text.split("-")[-1])
        return Verdict(relevant=number % 3 != 0, consistent=True, reason="")


def test_filter_pairs_with_workers_keeps_input_order() -> None:
    pairs = [_pair(f"p-{i}") for i in range(30)]
    result = filter_pairs(pairs, _FakeJudge(), workers=4)
    assert [r["id"] for r in result.kept] == [f"p-{i}" for i in range(30) if i % 3]
    assert [d.id for d in result.dropped] == [f"p-{i}" for i in range(30) if i % 3 == 0]
    assert result.counts["irrelevant"] == 10 and result.counts["kept"] == 20


def test_filter_pairs_aborts_when_the_judge_keeps_failing(tmp_path: Path) -> None:
    quarantine = tmp_path / "q.jsonl"
    with pytest.raises(JudgeFailingError, match="3 pairs in a row"):
        filter_pairs(
            [_pair(f"p-{i}") for i in range(10)], _FakeJudge(fail=True),
            quarantine_path=quarantine, max_consecutive_errors=3,
        )
    assert len(quarantine.read_text().splitlines()) == 3  # what was dropped before the stop is on disk


def test_filter_pairs_refuses_missing_or_repeated_ids() -> None:
    with pytest.raises(ValueError, match="no 'id'"):
        filter_pairs([{"query_tcot": TEXT_TCOT}], _FakeJudge())
    with pytest.raises(ValueError, match="appears twice"):
        filter_pairs([_pair("p-1"), _pair("p-1")], _FakeJudge())


def test_video_pair_without_frame_count_is_quarantined_not_crashed_on() -> None:
    pair = {**_pair("p-1"), "pos_modality": "video", "pos_tcot": VIDEO_TCOT}
    result = filter_pairs([pair], _FakeJudge())
    assert result.counts["unparseable_tcot"] == 1
    assert "num_frames" in result.dropped[0].detail


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("modality,cue", [
    ("text", "text_keywords"), ("image", "bbox_2d"), ("visdoc", "bbox_2d"), ("video", "key_frames"),
])
@pytest.mark.parametrize("side", ["query", "target"])
def test_prompts_explain_the_cue_of_each_modality(side: str, modality: str, cue: str) -> None:
    text = prompts.tcot_system_prompt(side, modality, num_frames=8)
    assert cue in text and "<thinking>" in text and "<rethink>" in text and "<answer>" in text
    assert ("QUERY" in text) == (side == "query") and ("CANDIDATE" in text) == (side == "target")
    other_cues = {"text_keywords", "bbox_2d", "key_frames"} - {cue}
    assert not any(other in text for other in other_cues)
    if modality in ("image", "visdoc"):
        assert "0 to 1000" in text
    if modality == "video":
        assert "between 1 and 8" in text
    with pytest.raises(ValueError, match="unknown modality"):
        prompts.tcot_system_prompt(side, "audio")
