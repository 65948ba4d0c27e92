"""A teacher behind an OpenAI-compatible chat endpoint (vLLM's server): writes T-CoTs and judges pairs.

Images travel as base64 PNG data URLs; a video travels as its sampled frames, each preceded by a
"Frame i:" label (1-based, the numbering the key_frames cue refers to).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import requests
from PIL import Image

from embedrl.tcot import prompts
from embedrl.tcot.format import TCoT, TCoTFormatError, parse, render

log = logging.getLogger(__name__)

API_KEY_ENV = "EMBEDRL_TEACHER_API_KEY"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# These cannot be about one request: the endpoint, key or model name is wrong.
CONFIG_ERROR_STATUS = frozenset({401, 403, 404})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "P", "RGB", "RGBA"})
_MAX_ERROR_TEXT = 500

Message = dict[str, Any]


class TeacherError(RuntimeError):
    """The teacher endpoint could not give an answer."""


class TeacherHTTPError(TeacherError):
    """A request failed: `status` is the HTTP status, or None for a connection error or timeout."""

    def __init__(self, message: str, *, url: str, status: int | None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    @property
    def is_config_error(self) -> bool:
        """True when no other request to this endpoint can succeed either (bad URL, key or model)."""
        return self.status in CONFIG_ERROR_STATUS


class JudgeFormatError(ValueError):
    """The judge's reply is not the JSON verdict asked for; `raw` holds the reply."""

    def __init__(self, message: str, *, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class TeacherResult:
    """One T-CoT from the teacher: the raw reply, and either the parsed T-CoT or why it did not parse."""

    raw: str
    tcot: TCoT | None
    error: str | None
    attempts: int

    @property
    def ok(self) -> bool:
        return self.tcot is not None


@dataclass(frozen=True)
class Verdict:
    """The judge's decision on one (query, query T-CoT, positive T-CoT) triple."""

    relevant: bool
    consistent: bool
    reason: str
    raw: str = ""

    @property
    def keep(self) -> bool:
        return self.relevant and self.consistent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_image(image: Image.Image) -> str:
    """PNG data URL of `image` (converted to RGB when PNG cannot store its mode, e.g. CMYK)."""
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_part(image: Image.Image) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": encode_image(image)}}


def media_parts(modality: str, images: Sequence[Image.Image]) -> list[dict[str, Any]]:
    """Content parts for the media of one input; checks that the image count fits the modality."""
    modality = prompts.canonical_modality(modality)
    if modality == "text":
        if images:
            raise ValueError(f"modality 'text' takes no images, got {len(images)}: use 'image' or 'video'")
        return []
    if not images:
        raise ValueError(f"modality {modality!r} needs at least one image (video: its sampled frames)")
    if modality != "video":
        return [_image_part(image) for image in images]
    parts: list[dict[str, Any]] = []
    for index, frame in enumerate(images, start=1):
        parts.append({"type": "text", "text": f"Frame {index}:"})
        parts.append(_image_part(frame))
    return parts


def parse_verdict(raw: str) -> Verdict:
    """Read the judge's JSON verdict; tolerates code fences and text around the one JSON object."""
    start = raw.find("{")
    if start < 0:
        raise JudgeFormatError(f"judge reply has no JSON object: {raw[:200]!r}", raw=raw)
    try:
        obj, _ = json.JSONDecoder().raw_decode(raw[start:])
    except json.JSONDecodeError as exc:
        raise JudgeFormatError(f"judge reply is not valid JSON ({exc.msg}): {raw[:200]!r}", raw=raw) from None
    if not isinstance(obj, dict):
        raise JudgeFormatError(f"judge reply is JSON but not an object: {raw[:200]!r}", raw=raw)
    for key in ("relevant", "consistent"):
        if not isinstance(obj.get(key), bool):
            raise JudgeFormatError(f"judge verdict needs a boolean {key!r}, got {obj.get(key)!r}", raw=raw)
    reason = obj.get("reason", "")
    return Verdict(
        relevant=obj["relevant"],
        consistent=obj["consistent"],
        reason=reason if isinstance(reason, str) else json.dumps(reason),
        raw=raw,
    )


def _as_text(tcot: TCoT | str) -> str:
    return render(tcot) if isinstance(tcot, TCoT) else tcot


def _server_message(response: requests.Response) -> str:
    """The error message in vLLM's or OpenAI's error body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MAX_ERROR_TEXT] or response.reason or ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
        if isinstance(error, str):
            return error
    return json.dumps(body)[:_MAX_ERROR_TEXT]


class ChatTeacher:
    """Client for a teacher model served behind `POST {base_url}/chat/completions`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout: float = 60,
        max_retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("max_retries and backoff must be >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        # requests.Session is not documented as thread-safe: one per thread for filter workers.
        self._local = threading.local()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"ChatTeacher(url={self.url!r}, model={self.model!r}, api_key={key})"

    # ---------------------------------------------------------------------------------- public API
    def write_tcot(
        self,
        *,
        side: str,
        modality: str,
        text: str,
        images: Sequence[Image.Image] = (),
        instruction: str = "",
    ) -> TeacherResult:
        """Ask for the T-CoT of one side; if the reply does not parse, ask once more with a reminder."""
        num_frames = len(images) if modality == "video" else None
        content = media_parts(modality, images)
        content.append({"type": "text", "text": prompts.tcot_user_text(side, text, instruction)})
        messages: list[Message] = [
            {"role": "system", "content": prompts.tcot_system_prompt(side, modality, num_frames=num_frames)},
            {"role": "user", "content": content},
        ]
        raw = self.chat(messages)
        tcot, error = self._try_parse(raw, modality, num_frames)
        if tcot is not None:
            return TeacherResult(raw=raw, tcot=tcot, error=None, attempts=1)
        log.debug(
            "teacher %s T-CoT (%s) did not parse (%s); asking again with a reminder", side, modality, error
        )
        messages += [
            {"role": "assistant", "content": raw},
            {"role": "user", "content": prompts.format_reminder(str(error), modality, num_frames)},
        ]
        raw = self.chat(messages)
        tcot, error = self._try_parse(raw, modality, num_frames)
        if error is not None:
            log.warning(
                "teacher %s T-CoT (%s) still does not parse after the reminder: %s", side, modality, error
            )
        return TeacherResult(raw=raw, tcot=tcot, error=error, attempts=2)

    def judge(self, query_text: str, query_tcot: TCoT | str, target_tcot: TCoT | str) -> Verdict:
        """Ask whether the positive is relevant to the query and the two T-CoTs agree.

        Raises JudgeFormatError when the reply is not the JSON verdict, TeacherError when the
        endpoint fails.
        """
        messages: list[Message] = [
            {"role": "system", "content": prompts.JUDGE_SYSTEM_PROMPT},
            {
                "role": "user",
                "content": prompts.judge_user_text(query_text, _as_text(query_tcot), _as_text(target_tcot)),
            },
        ]
        return parse_verdict(self.chat(messages))

    def chat(self, messages: list[Message]) -> str:
        """One chat completion, with retries; returns the assistant's text."""
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        body = self._post_with_retries(payload)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(
                f"unexpected reply from {self.url}: no choices[0].message.content in {json.dumps(body)[:200]}"
            ) from None
        return content or ""

    # ----------------------------------------------------------------------------------- internals
    @staticmethod
    def _try_parse(raw: str, modality: str, num_frames: int | None) -> tuple[TCoT | None, str | None]:
        try:
            return parse(raw, modality=modality, num_frames=num_frames), None
        except TCoTFormatError as exc:
            return None, str(exc)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _post_with_retries(self, payload: dict[str, Any]) -> dict[str, Any]:
        tries = self.max_retries + 1
        last = ""
        last_status: int | None = None
        for attempt in range(tries):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "teacher request to %s failed (%s); retry %d/%d in %.2fs",
                    self.url, last, attempt, self.max_retries, delay,
                )
                time.sleep(delay)
            try:
                response = self._session().post(
                    self.url, data=json.dumps(payload), headers=self._headers(), timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                last, last_status = self._redact(f"{type(exc).__name__}: {exc}"), None
                continue
            if response.status_code == 200:
                return self._json_body(response)
            message = self._redact(_server_message(response))
            if response.status_code not in RETRYABLE_STATUS:
                raise TeacherHTTPError(
                    f"teacher request to {self.url} was refused with HTTP {response.status_code}: {message}"
                    " (fix the request, model name or API key; this is not retried)",
                    url=self.url,
                    status=response.status_code,
                )
            last, last_status = f"HTTP {response.status_code}: {message}", response.status_code
        raise TeacherHTTPError(
            f"teacher request to {self.url} failed after {tries} tries; last error: {last}"
            " (check that the server is up and not overloaded, or raise max_retries/backoff/timeout)",
            url=self.url,
            status=last_status,
        )

    def _json_body(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise TeacherError(
                f"teacher at {self.url} answered HTTP 200 with a body that is not JSON: "
                f"{self._redact(response.text[:200])!r}; is base_url an OpenAI-compatible /v1 endpoint?"
            ) from None
        if not isinstance(body, dict):
            raise TeacherError(f"teacher at {self.url} answered with JSON that is not an object")
        return body
