"""Training data: load, validate, and shape it for the losses.

Two shapes cover every input:

* :class:`Group` - a query with relevant documents and (optionally) negatives:
  retrieval data, triplets, (query, positive) lists, mined hard negatives.
* :class:`ScoredPair` - a (query, document, label in [0, 1]) row: KorSTS-style
  graded data or explicit binary labels.

Errors name the file and line, so a bad row in a 100k-line file is found at once.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..types import Group, ScoredPair, json_lines  # the shared types live in types (re-exported here)


RELEVANT = 0.5  # a scored pair labelled at least this is a relevant document (splits, mining, evaluation)


class DataError(ValueError):
    """A training or evaluation file is malformed; the message names the line."""




@dataclass
class TrainingData:
    groups: list[Group] = field(default_factory=list)
    pairs: list[ScoredPair] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.groups) + len(self.pairs)

    def check(self, name: str = "data") -> "TrainingData":
        """Raise :class:`DataError` naming the row where this data cannot train: no rows, a text that is not
        a non-empty string, a group without positives, a label that is not a number in [0, 1] (a NaN label
        made the loss NaN). Files are checked as they are read (:func:`load`); data built in Python is
        checked here, by :func:`~rag_rerank.train.train`."""
        import math

        if not len(self):
            raise DataError(f"{name} holds no rows")
        for i, g in enumerate(self.groups):
            where = f"{name}.groups[{i}]"
            _text(g.query, where, "query")
            if not g.positives:
                raise DataError(f"{where}: no positive document")
            for what in ("positives", "negatives"):
                value = getattr(g, what)
                if isinstance(value, str):  # list() would have checked its characters
                    raise DataError(f"{where}: {what} must be a list of strings, not one string")
                _texts(list(value), where, what)
        for i, p in enumerate(self.pairs):
            where = f"{name}.pairs[{i}]"
            _text(p.query, where, "query")
            _text(p.document, where, "document")
            label = p.label
            if isinstance(label, bool) or not isinstance(label, (int, float)) or not math.isfinite(label) \
                    or not 0.0 <= label <= 1.0:
                raise DataError(f"{where}: label {label!r} is not a number in [0, 1]")
        return self

    def split(self, fraction: float, seed: int = 0, min_queries: int = 0, max_fraction: float = 0.25,
              by: str = "auto") -> tuple["TrainingData", "TrainingData"]:
        """Carve a validation part off: all rows of a query land on one side; with ``by="document"``
        so do all queries that share a relevant document, and with ``by="topic"`` also all queries
        of one topic (rows' ``topic`` field: an article, a source). ``"auto"`` (the default) is
        ``"topic"`` where rows carry topics, else ``"document"``.

        Several questions are often written about one passage (KorQuAD: about 6 per paragraph); split
        by query, validation would hold questions whose passage training already taught, overrate the
        reranker and tune the fusion on that. Split by passage, it still holds passages of articles
        training read: validation promised 0.978 MRR@10 where unseen articles gave 0.936 (issue 35).
        Topics held out whole measure what a user's new documents will see. ``fraction`` of the
        queries, but at least
        ``min_queries`` (capped at ``max_fraction``): on small data 10 % is too few queries to choose
        anything on. A cluster of queries larger than what is left to carve (one answer shared by
        hundreds of chatbot questions) stays in training.
        """
        if not 0 < fraction < 1:
            raise ValueError("validation fraction must be in (0, 1)")
        if by not in ("auto", "topic", "document", "query"):
            raise ValueError(f"split by 'auto', 'topic', 'document' or 'query', got {by!r}")
        if by == "auto":
            by = "topic" if self.topics() else "document"
        queries = sorted(self.queries())
        count = max(int(len(queries) * fraction), min(min_queries, int(len(queries) * max_fraction)), 1)
        units = self._query_clusters(queries, by == "topic") if by != "query" else [[q] for q in queries]
        random.Random(seed).shuffle(units)
        held: set[str] = set()
        for unit in units:
            if len(held) + len(unit) <= count:
                held.update(unit)
            if len(held) >= count:
                break
        if not held:  # every cluster is larger than the part wanted: take the smallest
            held.update(min(units, key=len))
        train = TrainingData([g for g in self.groups if g.query not in held],
                             [p for p in self.pairs if p.query not in held])
        val = TrainingData([g for g in self.groups if g.query in held], [p for p in self.pairs if p.query in held])
        return train, val

    def for_evaluation(self, threshold: float = RELEVANT) -> tuple[list[Group], int]:
        """The queries to evaluate, each (with its topic) once: its groups' positives and negatives, and its
        scored pairs - a label >= ``threshold`` relevant, below it a negative (a qrels or KorSTS file: one
        ``query, document, label`` row per judged document). Returns the groups with a relevant document
        and how many queries had none (left out of the metrics, as BEIR leaves them)."""
        groups = [Group(g.query, list(g.positives), list(g.negatives), g.candidates, g.sides, g.topic)
                  for g in merge_queries(self.groups)]  # copies: the pairs join them below
        at = {(g.query, g.topic): i for i, g in enumerate(groups)}
        for p in self.pairs:
            if (p.query, p.topic) not in at:
                at[p.query, p.topic] = len(groups)
                groups.append(Group(p.query, [], topic=p.topic))
            g = groups[at[p.query, p.topic]]
            if p.document not in g.positives and p.document not in g.negatives:
                (g.positives if p.label >= threshold else g.negatives).append(p.document)
        judged = [g for g in groups if g.positives]
        return judged, len(groups) - len(judged)

    def queries(self) -> set[str]:
        """Every query the rows name, groups and pairs alike."""
        return {g.query for g in self.groups} | {p.query for p in self.pairs}

    def relevant(self) -> dict[str, set[str]]:
        """Each query's relevant documents, whichever rows name them: its groups' positives and its pairs
        labelled >= :data:`RELEVANT`."""
        out: dict[str, set[str]] = {}
        for g in self.groups:
            out.setdefault(g.query, set()).update(g.positives)
        for p in self.pairs:
            if p.label >= RELEVANT:
                out.setdefault(p.query, set()).add(p.document)
        return out

    def topics(self) -> set[str]:
        """The topics rows name (empty: no row carries one)."""
        return {g.topic for g in self.groups if g.topic} | {p.topic for p in self.pairs if p.topic}

    def _query_clusters(self, queries: list[str], by_topic: bool = False) -> list[list[str]]:
        """Queries linked by a shared relevant document (a positive, or a pair labelled >= RELEVANT) and,
        ``by_topic``, by a shared topic, as sorted lists in a deterministic order."""
        parent = {q: q for q in queries}

        def root(q: str) -> str:
            while parent[q] != q:
                parent[q] = parent[parent[q]]
                q = parent[q]
            return q

        first_query: dict[str, str] = {}
        links = [(g.query, d) for g in self.groups for d in g.positives]
        links += [(p.query, p.document) for p in self.pairs if p.label >= RELEVANT]
        if by_topic:  # a topic links its queries like a document they share (keys apart from texts)
            links += [(g.query, ("topic", g.topic)) for g in self.groups if g.topic]
            links += [(p.query, ("topic", p.topic)) for p in self.pairs if p.topic]
        for query, document in links:
            other = first_query.setdefault(document, query)
            a, b = root(query), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
        clusters: dict[str, list[str]] = {}
        for q in queries:
            clusters.setdefault(root(q), []).append(q)
        return sorted(clusters.values())

    def scored_pairs(self) -> list[ScoredPair]:
        """Everything as (query, doc, label) rows: positives 1.0, negatives 0.0."""
        out = list(self.pairs)
        for g in self.groups:
            out += [ScoredPair(g.query, d, 1.0, g.topic) for d in g.positives]
            out += [ScoredPair(g.query, d, 0.0, g.topic) for d in g.negatives]
        return out


_QUERY_KEYS = ("query", "question", "anchor", "sentence1", "q")
_DOC_KEYS = ("document", "passage", "text", "sentence2", "answer", "a")
_LABEL_KEYS = ("label", "score")
_TOPIC_KEYS = ("topic", "source", "article")


def _text(value, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} is empty or not a string")
    return value


def _texts(value, where: str, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"{where}: {what} must be a string or a list of strings")
    return [_text(v, where, f"{what}[{i}]") for i, v in enumerate(value)]


def _label(value, where: str, scale: float) -> float:
    try:
        label = float(value) / scale
    except (TypeError, ValueError):
        raise DataError(f"{where}: label {value!r} is not a number") from None
    if not 0.0 <= label <= 1.0:
        raise DataError(f"{where}: label {value!r} is outside [0, {scale:g}] (use label_scale for other ranges)")
    return label


def _first(row: dict, keys: Sequence[str]):
    return next((row[k] for k in keys if k in row), None)


def parse_row(row: dict, where: str, label_scale: float = 1.0) -> Group | ScoredPair:
    """One JSON object / CSV row -> Group or ScoredPair."""
    query = _first(row, _QUERY_KEYS)
    if query is None:
        raise DataError(f"{where}: no query column (one of {', '.join(_QUERY_KEYS)}); got {sorted(row)}")
    query = _text(query, where, "query")
    topic = _first(row, _TOPIC_KEYS)
    if topic is not None:
        if isinstance(topic, (int, float)) and not isinstance(topic, bool):
            topic = str(topic)
        topic = _text(topic, where, "topic")
    if "positives" in row or "positive" in row:
        positives = _texts(row.get("positives", row.get("positive")), where, "positive")
        raw_neg = row.get("negatives", row.get("negative", []))
        negatives = _texts(raw_neg, where, "negative") if raw_neg not in (None, "", []) else []
        if not positives:
            raise DataError(f"{where}: no positive document")
        both = [n for n in negatives if n in set(positives)]
        if both:
            raise DataError(f"{where}: {both[0][:60]!r} is both a positive and a negative of this query")
        raw_cand = row.get("candidates")
        candidates = _texts(raw_cand, where, "candidates") if raw_cand not in (None, "", []) else []
        sides = {side: _texts(row[side], where, side) if row[side] else [] for side in SIDES if side in row}
        if sides and set(sides) != set(SIDES):
            raise DataError(f"{where}: a hybrid's saved rankings need both {' and '.join(SIDES)}")
        return Group(query, positives, negatives, candidates, sides, topic)
    document = _first(row, _DOC_KEYS)
    if document is None:
        raise DataError(f"{where}: no document column (one of {', '.join(_DOC_KEYS)} or positive/positives); "
                        f"got {sorted(row)}")
    document = _text(document, where, "document")
    key = next((k for k in _LABEL_KEYS if k in row), None)
    if key is None:
        return Group(query, [document], topic=topic)  # a plain (query, positive) row: no label column at all
    label = row[key]
    if label is None or (isinstance(label, str) and not label.strip()):
        # a label column left empty is a missing value, not a positive
        raise DataError(f"{where}: '{key}' is empty; give the row a label, or drop the column for positives-only data")
    return ScoredPair(query, document, _label(label, where, label_scale), topic)


def load(path: str | Path, *, label_scale: float | None = None) -> TrainingData:
    """Load JSONL (or a JSON array), CSV or TSV training data.

    JSONL objects: ``{"query", "positive(s)", "negative(s)"?, "candidates"?}`` (groups, triplets,
    lists; ``candidates``: the first stage's ranking for the query, as ``rag-rerank mine`` writes),
    ``{"query", "document", "label"}`` (scored pairs) or ``{"query", "document"}`` (positives).
    CSV/TSV with a header, same column names; KorSTS files (``score``, ``sentence1``,
    ``sentence2``) load as graded pairs with ``label_scale=5`` applied automatically.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    data, groups_at = TrainingData(), []
    try:
        for row, where, scale in _rows(path, label_scale):
            item = parse_row(row, where, scale)
            if isinstance(item, Group):
                data.groups.append(item)
                groups_at.append(where)
            else:
                data.pairs.append(item)
    except UnicodeDecodeError:
        raise DataError(f"{path}:{_bad_utf8_line(path)}: not UTF-8 text (cp949/EUC-KR? re-save the file as UTF-8, "
                        "e.g. iconv -f cp949 -t utf-8)") from None
    if not len(data):
        raise DataError(f"{path}: no rows")
    data.groups = merge_queries(data.groups, groups_at)
    return data


def merge_queries(groups: Sequence[Group], where: Sequence[str] | None = None) -> list[Group]:
    """Groups of one query (and topic) as one group, in first-seen order: positives and negatives joined
    (each text once), the first stage's candidates and sides taken from whichever row has them.

    A file of one row per relevant document (qrels-style ``query,document`` rows, or triplets) names a query
    several times. Kept apart, each row was a query of its own: evaluation scored a query with two relevant
    documents as two queries, each counting the other's document as a miss, and mining took the other row's
    positive as a hard negative. ``where``: each group's file:line, for errors (positions otherwise).
    Raises :class:`DataError` where rows of one query contradict each other (a text positive in one and
    negative in another, or two different saved candidate lists)."""
    where = list(where) if where is not None else [f"groups[{i}]" for i in range(len(groups))]
    first: dict[tuple[str, str | None], int] = {}
    out: list[Group] = []
    out_at: list[str] = []
    for g, at in zip(groups, where):
        key = (g.query, g.topic)
        i = first.get(key)
        if i is None:
            first[key] = len(out)
            out.append(g)
            out_at.append(at)
            continue
        m = out[i]
        positives, negatives = set(m.positives) | set(g.positives), set(m.negatives) | set(g.negatives)
        both = positives & negatives
        if both:
            raise DataError(f"{at}: {min(both)[:60]!r} is both a positive and a negative of query {g.query[:60]!r} "
                            f"(with the row at {out_at[i]})")
        for name in ("candidates", "sides"):
            if getattr(m, name) and getattr(g, name) and getattr(m, name) != getattr(g, name):
                raise DataError(f"{at}: query {g.query[:60]!r} is given other first-stage {name} than at "
                                f"{out_at[i]}; give a query's candidates once")
        out[i] = Group(m.query, list(dict.fromkeys(m.positives + g.positives)),
                       list(dict.fromkeys(m.negatives + g.negatives)), m.candidates or g.candidates,
                       m.sides or g.sides, m.topic)
    return out


def _bad_utf8_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return raw[: exc.start].count(b"\n") + 1
    return 1


def _open_text(path: Path, mode: str = "r"):
    """Text file, gzip-compressed when the name ends in .gz (mined data with candidates is large). Read as
    UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one; it had become part of the first
    column's name, so a file with a ``query`` column was refused for having none)."""
    encoding = "utf-8-sig" if mode == "r" else "utf-8"
    if path.suffix.lower() == ".gz":
        import gzip

        return gzip.open(path, mode + "t", encoding=encoding, newline="" if mode == "r" else None)
    return path.open(mode, encoding=encoding, newline="" if mode == "r" else None)


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")


def _json_rows(fh, path: Path, suffix: str) -> Iterable[tuple[str, dict]]:
    """A JSON-lines file's objects; a ``.json`` file may also hold one array of them (pandas'
    ``to_json(orient="records")``, as ``rag-rerank index`` reads .json files), each named by its place in it.
    An array was refused as "not valid JSON" at its first line."""
    if suffix == ".json":
        text = fh.read()
        if text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
            for i, row in enumerate(rows):
                if not isinstance(row, dict):
                    raise DataError(f"{path}[{i}]: each item must be a JSON object")
                yield f"{path}[{i}]", row
            return
        fh = text.splitlines()
    yield from json_lines(fh, path, DataError)


def _rows(path: Path, label_scale: float | None) -> Iterable[tuple[dict, str, float]]:
    suffix = _suffix(path)
    if suffix in (".jsonl", ".json"):
        documents: dict[str, str] | None = None
        with _open_text(path) as fh:
            for where, row in _json_rows(fh, path, suffix):
                if documents is None and set(row) == {DOCUMENTS_KEY}:
                    documents = _documents_table(row[DOCUMENTS_KEY], where)
                    continue
                yield _resolve_ids(row, documents, where), where, label_scale or 1.0
        return
    if suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: unsupported format {suffix!r}; use .jsonl, .json, .csv or .tsv (optionally .gz)")
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE
                                if suffix == ".tsv" else csv.QUOTE_MINIMAL)
        header = reader.fieldnames or []
        scale = label_scale or (5.0 if {"score", "sentence1", "sentence2"} <= set(header) else 1.0)
        for row in reader:
            # the record's first line: a quoted field may hold line breaks (an answer of several lines, as
            # Excel writes it), so counting records named a later row's error lines too early
            n = reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str))
            if None in row:
                raise DataError(f"{path}:{n}: more fields than the header has")
            missing = [k for k, v in row.items() if v is None]
            if missing:  # a short row: dropping its missing label would make a labelled pair a positive
                raise DataError(f"{path}:{n}: {len(header) - len(missing)} fields where the header has {len(header)} "
                                f"(no {', '.join(map(repr, missing))}); leave a field empty rather than out")
            yield row, f"{path}:{n}", scale


def _rows_of(item: Group | ScoredPair) -> int:
    """Training rows (scored pairs) one group or pair becomes: the unit steps and time scale with."""
    return 1 if isinstance(item, ScoredPair) else len(item.positives) + len(item.negatives)


def mix_in(primary: TrainingData, extras: Sequence[tuple[str, TrainingData]], share: float,
           seed: int = 0) -> tuple[TrainingData, list[str]]:
    """The primary task's training data plus other tasks' data, which together make at most ``share``
    of the training rows (each extra sampled down by the same fraction, groups kept whole).

    Extra data is used as given: its groups must carry negatives already (``rag-rerank mine`` them
    against their own corpus), since the primary task's first stage has never seen their documents.
    Returns the mixed data and one line per extra saying what was taken, for the training report.
    """
    if not 0 < share < 1:
        raise ValueError(f"extra_data_share must be in (0, 1), got {share}")
    for name, data in extras:
        bare = [g.query for g in data.groups if not g.negatives]
        if bare:
            raise DataError(f"{name}: {len(bare)} of {len(data.groups)} queries have no negatives (first: "
                            f"{bare[0]!r}); extra data is used as given, so mine it against its own corpus "
                            f"first (rag-rerank mine --data {name} --corpus ... --output ...)")
    budget = share / (1 - share) * len(primary.scored_pairs())
    total = sum(_rows_of(i) for _, data in extras for i in (*data.groups, *data.pairs))
    fraction = min(1.0, budget / total) if total else 1.0
    groups, pairs, lines = list(primary.groups), list(primary.pairs), []
    rng = random.Random(seed)
    for name, data in extras:
        items: list[Group | ScoredPair] = [*data.groups, *data.pairs]
        rng.shuffle(items)
        allowed, taken = fraction * sum(map(_rows_of, items)), 0
        for item in items:
            if taken + _rows_of(item) > allowed:
                continue
            taken += _rows_of(item)
            (groups if isinstance(item, Group) else pairs).append(item)
        lines.append(f"{name}: {taken} of {sum(map(_rows_of, items))} rows")
    return TrainingData(groups, pairs), lines


def from_pairs(pairs: Iterable[tuple[str, str]]) -> TrainingData:
    """Plain ``(query, positive)`` tuples -> groups (validated, duplicates merged per query)."""
    groups: dict[str, Group] = {}
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"pairs[{i}]: expected (query, positive)")
        q = _text(pair[0], f"pairs[{i}]", "query")
        d = _text(pair[1], f"pairs[{i}]", "positive")
        group = groups.setdefault(q, Group(q, []))
        if d not in group.positives:
            group.positives.append(d)
    return TrainingData(list(groups.values()))


# Files written by ``rag-rerank mine`` / ``eval --save-candidates`` name documents by id: a header
# line ``{"documents": {id: text}}`` holds each text once, and rows carry ``positive_ids``,
# ``negative_ids`` and ``candidate_ids``. Written as text, 4,048 queries x 30 candidates over a
# 961-passage corpus took 75 MB; by id the file grows with queries, not queries x passage length.
DOCUMENTS_KEY = "documents"
SIDES = ("dense", "bm25")  # Group.sides' keys
_ID_FIELDS = {"positive_ids": "positives", "negative_ids": "negatives", "candidate_ids": "candidates",
              "dense_ids": "dense", "bm25_ids": "bm25"}


def _documents_table(table, where: str) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise DataError(f"{where}: 'documents' must map ids to texts")
    return table


def _resolve_ids(row: dict, documents: dict[str, str] | None, where: str) -> dict:
    """A row whose documents are named by id -> the same row with texts."""
    fields = [f for f in _ID_FIELDS if f in row]
    if not fields:
        return row
    if documents is None:
        raise DataError(f"{where}: {fields[0]} needs a 'documents' header line (id -> text) first in the file")
    row = dict(row)
    for field_name in fields:
        ids = row.pop(field_name)
        if not isinstance(ids, list):
            raise DataError(f"{where}: {field_name} must be a list of ids")
        missing = [i for i in ids if i not in documents]
        if missing:
            raise DataError(f"{where}: {field_name} names {missing[0]!r}, which the 'documents' header does not hold")
        row[_ID_FIELDS[field_name]] = [documents[i] for i in ids]
    return row


def save_jsonl(data: TrainingData, path: str | Path, *, by_id: bool = True) -> None:
    """Write groups and pairs as JSONL (gzip-compressed when the name ends in .gz).

    ``by_id`` (the default) writes each distinct text of the groups once, in a header line, and
    the groups' positives, negatives and candidates as ids into it; :func:`load` reads both forms.
    """
    from ..retrieval.first_stage import text_id

    with _open_text(Path(path), "w") as fh:
        if by_id and data.groups:
            table = {text_id(t): t for g in data.groups
                     for t in (*g.positives, *g.negatives, *g.candidates, *(t for side in g.sides.values() for t in side))}
            fh.write(json.dumps({DOCUMENTS_KEY: table}, ensure_ascii=False) + "\n")
        for g in data.groups:
            if by_id:
                row = {"query": g.query, "positive_ids": [text_id(t) for t in g.positives],
                       "negative_ids": [text_id(t) for t in g.negatives]}
                if g.candidates:
                    row["candidate_ids"] = [text_id(t) for t in g.candidates]
                row.update({f"{side}_ids": [text_id(t) for t in texts] for side, texts in g.sides.items()})
            else:
                row = {"query": g.query, "positives": g.positives, "negatives": g.negatives}
                if g.candidates:
                    row["candidates"] = g.candidates
                row.update(g.sides)
            if g.topic:
                row["topic"] = g.topic
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for p in data.pairs:
            row = {"query": p.query, "document": p.document, "label": p.label}
            if p.topic:
                row["topic"] = p.topic
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
