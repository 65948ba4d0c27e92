"""Typed records of the formats in docs/data-formats.md, and the checks that need no file system.

Each record kind is a pydantic model in strict mode (a str field takes no int, an int field takes no
bool) that keeps unknown fields as extras. `Record.problems()` adds the checks across fields (list
lengths, a positive candidate, text or media, `<|image_1|>` without media, text size) and of the extras
that later stages parse (the `scene` JSON, the T-CoT columns of prepared data); media paths are
checked by the reader, which knows the data root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from embedrl.data.paths import MediaKind
from embedrl.tcot.format import parse as parse_tcot

IMAGE_TOKEN = "<|image_1|>"
DEFAULT_MAX_TEXT_CHARS = 20_000


def _none_as_empty(value: Any) -> Any:
    # Parquet has no absent cell: a row without an optional column reads back as null.
    return "" if value is None else value


OptStr = Annotated[StrictStr, BeforeValidator(_none_as_empty)]


def shorten(value: Any, limit: int = 60) -> str:
    """The value as JSON, cut to `limit` characters, for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:
        text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} chars)"


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type (`null`, `bool`, `int`, `str`, `list`, `object`)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class FieldError(NamedTuple):
    """One problem of a record: the field (`tgt_text[2]`, or `<line>` for the whole line) and why."""

    field: str
    reason: str


class MediaRef(NamedTuple):
    """A media path a record refers to, with what it must be."""

    field: str
    path: str
    expect: MediaKind


@dataclass(frozen=True)
class RecordError:
    """One problem, located: file, row or line number, record id (None when the record has none)."""

    source: str
    index: int
    id: str | None
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.index} id={self.id if self.id is not None else '-'} field={self.field}: {self.reason}"


@dataclass
class Rejection:
    """A rejected record: where it was, its id, every problem found, and the record as read."""

    source: str
    index: int
    id: str | None
    errors: list[FieldError]
    record: Any

    def record_errors(self) -> list[RecordError]:
        return [RecordError(self.source, self.index, self.id, e.field, e.reason) for e in self.errors]

    def to_json(self) -> dict[str, Any]:
        """The quarantine line of this record (docs/data-formats.md, "Quarantine file")."""
        return {
            "source": self.source,
            "index": self.index,
            "id": self.id,
            "errors": [{"field": e.field, "reason": e.reason} for e in self.errors],
            "record": self.record,
        }


# -------------------------------------------------------------------------------------------- base
class Record(BaseModel):
    """Base of every record kind."""

    model_config = ConfigDict(extra="allow", strict=True)

    KIND: ClassVar[str]
    ID_FIELD: ClassVar[str | None] = None  # attribute name of the record id
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ()  # attribute names that must be unique within a file
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ()  # attribute names under the text size limit
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ()  # prepared-data T-CoT extras: a T-CoT text or "" (none)

    @classmethod
    def field_name(cls, attr: str) -> str:
        """The name of a field in the data (its alias, e.g. `query-id` for `query_id`)."""
        return cls.model_fields[attr].alias or attr

    @classmethod
    def id_field_name(cls) -> str | None:
        return cls.field_name(cls.ID_FIELD) if cls.ID_FIELD else None

    @classmethod
    def raw_id(cls, raw: Any) -> str | None:
        """The id of a raw row that may not validate, when it has a string one."""
        name = cls.id_field_name()
        if name is None or not isinstance(raw, dict):
            return None
        value = raw.get(name)
        return value if isinstance(value, str) else None

    @classmethod
    def parse(
        cls, raw: Any, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    ) -> tuple[Record | None, list[FieldError]]:
        """The typed record (None when the types are wrong) and every problem found.

        Field checks run only on a row whose types are right; a record with problems is still returned,
        so that the caller can check its media too.
        """
        if not isinstance(raw, dict):
            return None, [
                FieldError("<row>", f"expected a JSON object, got {json_type_name(raw)} {shorten(raw)}")
            ]
        try:
            record = cls.model_validate(raw)
        except ValidationError as exc:
            return None, [pydantic_field_error(err) for err in exc.errors(include_url=False)]
        return record, record.problems(max_text_chars=max_text_chars)

    def record_id(self) -> str | None:
        return getattr(self, self.ID_FIELD) if self.ID_FIELD else None

    def key(self) -> tuple[Any, ...] | None:
        """What must be unique within a file; None when the record has nothing unique."""
        values = tuple(getattr(self, attr) for attr in self.KEY_FIELDS)
        return values if values and all(v is not None for v in values) else None

    def media_refs(self) -> list[MediaRef]:
        return []

    def problems(self, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> list[FieldError]:
        """Checks across fields, on a record whose types are right."""
        errors = self._empty_key_errors() + self._text_size_errors(max_text_chars) + self._extra_errors()
        return errors + self._field_checks()

    def to_dict(self) -> dict[str, Any]:
        """The record in its data layout (aliases as field names, extras included)."""
        return self.model_dump(by_alias=True)

    def _field_checks(self) -> list[FieldError]:
        return []

    def _extra_errors(self) -> list[FieldError]:
        # Later stages parse these extras; a bad one must stop here, named, not crash a training step.
        extras = self.model_extra or {}
        errors = scene_errors(extras["scene"]) if "scene" in extras else []
        for name in self.TCOT_FIELDS:
            if name in extras:
                errors += tcot_errors(name, extras[name])
        return errors

    def _empty_key_errors(self) -> list[FieldError]:
        attrs = dict.fromkeys([*((self.ID_FIELD,) if self.ID_FIELD else ()), *self.KEY_FIELDS])
        return [
            FieldError(self.field_name(attr), "empty string; an id is required")
            for attr in attrs
            if getattr(self, attr) == ""
        ]

    def _text_size_errors(self, limit: int) -> list[FieldError]:
        errors = []
        for attr in self.TEXT_FIELDS:
            value = getattr(self, attr)
            texts = value if isinstance(value, list) else [value]
            for i, text in enumerate(texts):
                if isinstance(text, str) and len(text) > limit:
                    name = (
                        f"{self.field_name(attr)}[{i}]" if isinstance(value, list) else self.field_name(attr)
                    )
                    errors.append(FieldError(name, f"text of {len(text)} chars exceeds the limit of {limit}"))
        return errors


_TYPE_NAMES = {
    "string_type": "str",
    "int_type": "int",
    "list_type": "list",
    "dict_type": "object",
    "bool_type": "bool",
    "float_type": "float",
}


def pydantic_field_error(err: Any) -> FieldError:
    """A pydantic error (one item of `ValidationError.errors()`) as a FieldError with the bad value."""
    field = (
        "".join(
            f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
            for i, part in enumerate(err["loc"])
        )
        or "<row>"
    )
    if err["type"] == "missing":
        return FieldError(field, "required field missing")
    value = err.get("input")
    expected = _TYPE_NAMES.get(err["type"])
    if expected:
        return FieldError(field, f"expected {expected}, got {json_type_name(value)} {shorten(value)}")
    return FieldError(field, f"{err['msg']}: {shorten(value)}")


def scene_errors(scene: Any) -> list[FieldError]:
    """Problems of a `scene` extra: a JSON text holding an object, or empty (docs/data-formats.md)."""
    if scene is None or scene == "":
        return []
    if not isinstance(scene, str):
        return [
            FieldError("scene", f"expected a JSON text (str), got {json_type_name(scene)} {shorten(scene)}")
        ]
    try:
        value = json.loads(scene)
    except json.JSONDecodeError as exc:
        return [FieldError("scene", f"not valid JSON ({exc.msg} at column {exc.colno}): {shorten(scene)}")]
    if not isinstance(value, dict):
        return [FieldError("scene", f"expected a JSON object, got {json_type_name(value)} {shorten(value)}")]
    return []


def tcot_errors(field: str, value: Any) -> list[FieldError]:
    """Problems of a T-CoT extra: a T-CoT text that parses (structure and types), or empty for none."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        return [
            FieldError(field, f"expected a T-CoT text (str), got {json_type_name(value)} {shorten(value)}")
        ]
    try:
        parse_tcot(value)
    except ValueError as exc:  # TCoTFormatError is a ValueError
        return [FieldError(field, f"not a T-CoT: {exc}")]
    return []


def _tcot_list_errors(field: str, value: Any, n: int) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, list):
        return [
            FieldError(
                field, f"expected a list of {n} T-CoT texts, got {json_type_name(value)} {shorten(value)}"
            )
        ]
    if len(value) != n:
        return [FieldError(field, f"{len(value)} T-CoTs for {n} candidates in tgt_text")]
    return [error for i, text in enumerate(value) for error in tcot_errors(f"{field}[{i}]", text)]


def _token_without_media(field: str, text: str, media: str, media_field: str) -> list[FieldError]:
    if IMAGE_TOKEN in text and not media:
        return [FieldError(field, f"contains {IMAGE_TOKEN} but {media_field} is empty")]
    return []


# ---------------------------------------------------------------------------------------- MMEB
class MMEBTrainRow(Record):
    """A training pair (MMEB-train parquet layout); `id` is optional (the reader fills `<file>:<row>`)."""

    KIND: ClassVar[str] = "mmeb_train"
    ID_FIELD: ClassVar[str | None] = "id"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("id",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("qry", "pos_text", "neg_text")
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("qry_tcot", "pos_tcot", "neg_tcot")

    qry: StrictStr
    qry_image_path: StrictStr
    pos_text: StrictStr
    pos_image_path: StrictStr
    neg_text: OptStr = ""
    neg_image_path: OptStr = ""
    id: StrictStr | None = None

    def media_refs(self) -> list[MediaRef]:
        pairs = [
            ("qry_image_path", self.qry_image_path),
            ("pos_image_path", self.pos_image_path),
            ("neg_image_path", self.neg_image_path),
        ]
        return [MediaRef(field, path, "any") for field, path in pairs if path]

    def _field_checks(self) -> list[FieldError]:
        errors = []
        if not self.qry and not self.qry_image_path:
            errors.append(
                FieldError("qry", "the query has neither text nor media (qry and qry_image_path are empty)")
            )
        if not self.pos_text and not self.pos_image_path:
            errors.append(
                FieldError(
                    "pos_text",
                    "the positive has neither text nor media (pos_text and pos_image_path are empty)",
                )
            )
        errors += _token_without_media("qry", self.qry, self.qry_image_path, "qry_image_path")
        errors += _token_without_media("pos_text", self.pos_text, self.pos_image_path, "pos_image_path")
        errors += _token_without_media("neg_text", self.neg_text, self.neg_image_path, "neg_image_path")
        return errors


class MMEBEvalRow(Record):
    """An evaluation query with its candidates (MMEB-V2 layout); the first candidate is the positive."""

    KIND: ClassVar[str] = "mmeb_eval"
    ID_FIELD: ClassVar[str | None] = "id"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("id",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("qry_inst", "qry_text", "tgt_text")
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("qry_tcot", "qry_tcot_gold")
    TCOT_LIST_FIELDS: ClassVar[tuple[str, ...]] = ("tgt_tcot", "tgt_tcot_gold")  # one per candidate

    id: StrictStr
    qry_inst: StrictStr
    qry_text: StrictStr
    qry_img_path: StrictStr
    tgt_text: list[StrictStr]
    tgt_img_path: list[StrictStr]
    tgt_relevance: list[StrictInt] | None = None

    def media_refs(self) -> list[MediaRef]:
        refs = [MediaRef("qry_img_path", self.qry_img_path, "any")] if self.qry_img_path else []
        return refs + [MediaRef(f"tgt_img_path[{i}]", p, "any") for i, p in enumerate(self.tgt_img_path) if p]

    MIN_CANDIDATES: ClassVar[int] = 2  # a local list needs a positive and a negative

    def _field_checks(self) -> list[FieldError]:
        n = len(self.tgt_text)
        errors = []
        if n < self.MIN_CANDIDATES:
            errors.append(FieldError("tgt_text", f"{n} candidate(s); at least {self.MIN_CANDIDATES} are needed"))
        if len(self.tgt_img_path) != n:
            errors.append(
                FieldError("tgt_img_path", f"{len(self.tgt_img_path)} paths for {n} candidates in tgt_text")
            )
        errors += self._relevance_errors(n)
        extras = self.model_extra or {}
        for name in self.TCOT_LIST_FIELDS:
            if name in extras:
                errors += _tcot_list_errors(name, extras[name], n)
        if not self.qry_text and not self.qry_img_path:
            errors.append(
                FieldError(
                    "qry_text", "the query has neither text nor media (qry_text and qry_img_path are empty)"
                )
            )
        errors += _token_without_media("qry_inst", self.qry_inst, self.qry_img_path, "qry_img_path")
        errors += _token_without_media("qry_text", self.qry_text, self.qry_img_path, "qry_img_path")
        for i, (text, path) in enumerate(zip(self.tgt_text, self.tgt_img_path, strict=False)):
            if not text and not path:
                errors.append(FieldError(f"tgt_text[{i}]", "candidate has neither text nor media"))
            errors += _token_without_media(f"tgt_text[{i}]", text, path, f"tgt_img_path[{i}]")
        return errors

    def _relevance_errors(self, n: int) -> list[FieldError]:
        rel = self.tgt_relevance
        if rel is None:
            return []
        if len(rel) != n:
            return [FieldError("tgt_relevance", f"{len(rel)} values for {n} candidates in tgt_text")]
        negative = [
            FieldError(f"tgt_relevance[{i}]", f"negative relevance {v}") for i, v in enumerate(rel) if v < 0
        ]
        if negative:
            return negative
        if not any(v > 0 for v in rel):
            return [FieldError("tgt_relevance", "no positive candidate: every value is 0")]
        return []


class MMEBEvalPoolRow(MMEBEvalRow):
    """An evaluation query of a task with a global pool (MMEB-V2 `eval_type: global`): its candidates
    join the pool of every row, so one candidate (its positive) is enough; the first is the positive."""

    KIND: ClassVar[str] = "mmeb_eval_pool"
    MIN_CANDIDATES: ClassVar[int] = 1


# -------------------------------------------------------------------------------------- VisDoc
class VisDocQuery(Record):
    """A visual-document retrieval query (`queries.jsonl`)."""

    KIND: ClassVar[str] = "visdoc_query"
    ID_FIELD: ClassVar[str | None] = "query_id"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("query_id",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("query", "qry_inst")
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("tcot", "tcot_gold")

    query_id: StrictStr = Field(alias="query-id")
    query: StrictStr
    qry_inst: OptStr = ""

    def _field_checks(self) -> list[FieldError]:
        return [] if self.query else [FieldError("query", "empty query text")]


class VisDocPage(Record):
    """A document page of the global pool (`corpus.jsonl`)."""

    KIND: ClassVar[str] = "visdoc_page"
    ID_FIELD: ClassVar[str | None] = "corpus_id"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("corpus_id",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("text",)
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("tcot", "tcot_gold")

    corpus_id: StrictStr = Field(alias="corpus-id")
    image_path: StrictStr
    text: OptStr = ""

    def media_refs(self) -> list[MediaRef]:
        return [MediaRef("image_path", self.image_path, "image")] if self.image_path else []

    def _field_checks(self) -> list[FieldError]:
        return [] if self.image_path else [FieldError("image_path", "empty; a page needs its image")]


class VisDocQrel(Record):
    """A graded relevance judgement (`qrels.jsonl`); unique per (query-id, corpus-id)."""

    KIND: ClassVar[str] = "visdoc_qrel"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("query_id", "corpus_id")

    query_id: StrictStr = Field(alias="query-id")
    corpus_id: StrictStr = Field(alias="corpus-id")
    score: StrictInt

    def _field_checks(self) -> list[FieldError]:
        return [] if self.score >= 0 else [FieldError("score", f"negative score {self.score}")]


# ---------------------------------------------------------------------------------------- UVRB
class UVRBQuery(Record):
    """A video retrieval query (`queries.jsonl`): text, and at most one medium, a frames directory
    (`video_path`) or an image (`image_path`, for image-to-video and text+image composed queries)."""

    KIND: ClassVar[str] = "uvrb_query"
    ID_FIELD: ClassVar[str | None] = "qid"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("qid",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("text",)
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("tcot", "tcot_gold")

    qid: StrictStr
    text: StrictStr
    video_path: OptStr = ""
    image_path: OptStr = ""

    def media_refs(self) -> list[MediaRef]:
        refs = [MediaRef("video_path", self.video_path, "frames")] if self.video_path else []
        return refs + ([MediaRef("image_path", self.image_path, "image")] if self.image_path else [])

    def _field_checks(self) -> list[FieldError]:
        if self.video_path and self.image_path:
            return [FieldError("image_path", "a query holds one medium: video_path and image_path are both set")]
        if self.text or self.video_path or self.image_path:
            return []
        return [
            FieldError("text", "the query has neither text nor media (text, video_path and image_path are empty)")
        ]


class UVRBCorpusItem(Record):
    """A video of the corpus (`corpus.jsonl`): a frames directory."""

    KIND: ClassVar[str] = "uvrb_corpus"
    ID_FIELD: ClassVar[str | None] = "cid"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("cid",)
    TEXT_FIELDS: ClassVar[tuple[str, ...]] = ("caption",)
    TCOT_FIELDS: ClassVar[tuple[str, ...]] = ("tcot", "tcot_gold")

    cid: StrictStr
    video_path: StrictStr
    caption: OptStr = ""

    def media_refs(self) -> list[MediaRef]:
        return [MediaRef("video_path", self.video_path, "frames")] if self.video_path else []

    def _field_checks(self) -> list[FieldError]:
        return [] if self.video_path else [FieldError("video_path", "empty; a corpus item needs its video")]


class UVRBInstance(Record):
    """A relevant (query, video) pair (`instances.jsonl`); unique per (qid, cid)."""

    KIND: ClassVar[str] = "uvrb_instance"
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("qid", "cid")

    qid: StrictStr
    cid: StrictStr
    relevance: StrictInt

    def _field_checks(self) -> list[FieldError]:
        return [] if self.relevance > 0 else [FieldError("relevance", f"must be > 0, got {self.relevance}")]


RECORD_TYPES: dict[str, type[Record]] = {
    cls.KIND: cls
    for cls in (
        MMEBTrainRow,
        MMEBEvalRow,
        MMEBEvalPoolRow,
        VisDocQuery,
        VisDocPage,
        VisDocQrel,
        UVRBQuery,
        UVRBCorpusItem,
        UVRBInstance,
    )
}
