"""An office's history: a table of past suggestions loaded in bulk, and every stored text masked again.

History is not intake: no row waits for an answer, so rows are analysed in batches on every core and
written in bulk, and one re-clustering at the end builds their topics.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from triage.assess.features import PREPARE_PARALLEL_MIN
from triage.office.clustering import ClusteringCoordinator
from triage.office.common import (Actor, Conflict, Intake, InvalidRequest, OfficeService, _assessment_row, _cell,
                                  full_text)
from triage.errors import TriageError
from triage.office.intake import IntakeDesk, Submission
from triage.pipeline import validate_text
from triage.store.database import AuditEvent, Suggestion, Topic

log = logging.getLogger(__name__)


class History(OfficeService):
    """Bulk import of past suggestions, and re-masking what is stored."""

    def __init__(self, state, intake: IntakeDesk, clustering: ClusteringCoordinator) -> None:
        super().__init__(state)
        self.intake, self.clustering = intake, clustering

    def remask(self, batch: int = 500, actor: Actor | None = None) -> dict[str, Any]:
        """Mask every stored message again with today's masker (titles and bodies, from the raw columns).

        Masking improves (a name NER, new rules); rows stored before kept what the older masker left in
        clear, in the text every staff key reads. Segmentation and place finding improve too, and a
        re-clustering reads the stored ``tokens`` and ``places``: they are brought up to date from the
        masked text even where the text itself is unchanged (an earlier version compared the text only,
        so lettered place codes cut as one word reached no stored message). Only ``text`` (with its
        search document), ``tokens``, ``pii_kinds``, ``place`` and ``places`` change (a place the form
        gave stays the fallback, as at intake); the raw columns are the source and stay as they are.
        Topics' places, keywords and labels were made from the old rows: ``triage remask`` re-clusters
        once when any row changed. Idempotent; the store records the masker version it reached
        (``masker_version``).
        """
        from triage.text.normalise import MASKER_VERSION, clean, tokens

        changed = seen = 0
        last = 0
        while True:
            with self.lock, self.store.session() as s:
                rows = s.execute(select(Suggestion).where(Suggestion.id > last).order_by(Suggestion.id)
                                 .limit(batch)).scalars().all()
                if not rows:
                    break
                for r in rows:
                    m = clean(full_text(Intake(text=r.raw_text, title=r.title or "")))
                    toks = " ".join(tokens(m.text))
                    names, primary = self.intake.places_in(m.text)
                    place, places = self.intake.with_given(r.place_given, primary, names)
                    if (m.text, toks, place, places) != (r.text, r.tokens, r.place, list(r.places or [])):
                        r.text, r.tokens, r.pii_kinds, r.place, r.places = m.text, toks, m.kinds, place, places
                        changed += 1
                seen += len(rows)
                last = rows[-1].id
            log.info("remask: %d messages read, %d changed", seen, changed)
        # labels and keywords were made from the old masked texts; decided topics are never re-clustered
        topics = 0
        with self.lock, self.store.session() as s:
            for t in s.execute(select(Topic).where(Topic.label_locked.is_(False))).scalars():
                label = clean(t.label or "").text
                kept = [k for k in (t.keywords or []) if clean(k).text == k]
                if label != (t.label or "") or kept != list(t.keywords or []):
                    t.label, t.keywords = label, kept
                    topics += 1
        with self.store.session() as s:
            self.store.set_setting(s, "masker_version", MASKER_VERSION)
            s.add(AuditEvent(actor=actor.name if actor else "triage remask", role=actor.role if actor else "admin",
                             action="remask", target_type="store", target_id=MASKER_VERSION,
                             detail={"messages": seen, "changed": changed, "topics": topics}))
        return {"messages": seen, "changed": changed, "topics": topics, "masker_version": MASKER_VERSION}

    #: rows analysed and written together by :meth:`import_frame`: twice the size at which preparing
    #: texts spreads over processes, so a batch with a few refused rows still runs on every core
    IMPORT_BATCH = 2 * PREPARE_PARALLEL_MIN
    #: rows placed in topics per transaction where staff have decided topics (see :meth:`import_frame`)
    PLACE_GROUP = 64

    def import_frame(self, frame: pd.DataFrame, text_columns: list[str],
                     progress: Callable[[dict], None] | None = None,
                     lines: Sequence[int] | None = None) -> dict[str, int]:
        """Load a table of past suggestions (a history, the demo file on first start), then re-cluster once.

        History is not intake: no row waits for an answer and a re-clustering follows, so rows are
        analysed in batches on every core (segmenting, masking, the sentence encoder per batch) and
        written in bulk without a topic; the one re-clustering at the end builds every topic. Through
        :meth:`IntakeDesk.submit` one row at a time, each row paid for its own model calls and a topic update
        under the worker's lock. A row that cannot be stored is reported with its line in the file
        (``lines``, as :func:`triage.io.tables.read_table` counts them; else the header is line 1 and each
        row one line) and the rest goes on. ``progress`` gets ``{"stage", "done", "total", "seconds"}``
        after each batch, then the re-clustering's stages.

        Where staff have already decided topics (accepted, pinned), a re-clustering leaves those alone,
        so rows are then placed one at a time as intake places them (the model work still batched):
        a history message about an accepted topic joins it instead of opening a candidate beside it.
        """
        from triage.candidates import _net_support, _pick

        t0 = time.perf_counter()
        stored = failed = 0
        titles = frame[text_columns[0]] if len(text_columns) > 1 else None
        body = frame[text_columns[-1]]
        when, chan, who = _pick(frame, "submitted_at"), _pick(frame, "channel"), _pick(frame, "submitter")
        support = _net_support(frame)
        workers = os.cpu_count() or 1
        total = len(frame)

        def refuse(i: int, reason: str) -> None:
            nonlocal failed
            failed += 1
            log.warning("第 %d 行未导入：%s", lines[i] if lines is not None else i + 2, reason)

        with self.store.session() as s:
            decided = s.execute(select(func.count()).select_from(Topic).where(
                Topic.pinned.is_(True) | (Topic.status != "candidate"))).scalar_one()

        for lo in range(0, total, self.IMPORT_BATCH):
            batch: list[tuple[int, Intake, dt.datetime]] = []
            for i in range(lo, min(lo + self.IMPORT_BATCH, total)):
                stamp = _cell(when.iat[i]) if when is not None else ""
                data = Intake(text=_cell(body.iat[i]), title=_cell(titles.iat[i]) if titles is not None else "",
                              channel=(_cell(chan.iat[i]) if chan is not None else "") or "历史导入",
                              place=(_cell(frame["place"].iat[i]) or None) if "place" in frame else None,
                              submitted_at=pd.to_datetime(stamp, errors="coerce") if stamp else None,
                              submitter=_cell(who.iat[i]) if who is not None else "",
                              support=int(support.iat[i]) if isinstance(support, pd.Series) else 0)
                if stamp and pd.isna(data.submitted_at):   # a history row's time is not "now" by accident
                    refuse(i, f"提交时间“{stamp[:40]}”无法识别 / submitted_at is not a date")
                    continue
                reason = validate_text(data.text) or validate_text(full_text(data))
                if reason is not None:
                    refuse(i, reason)
                    continue
                try:
                    submitted = self.intake.admissible_time(data.submitted_at)
                except InvalidRequest as exc:
                    refuse(i, str(exc))
                    continue
                batch.append((i, data, submitted))
            analysed = self.intake.analyse([full_text(d) for _, d, _ in batch], workers=workers) if batch else []
            if decided:
                # placed as intake places them, a group per transaction (short: intake may share the lock)
                for g in range(0, len(batch), self.PLACE_GROUP):
                    group = list(zip(batch[g:g + self.PLACE_GROUP], analysed[g:g + self.PLACE_GROUP]))
                    outcomes = self.intake.submit_many([Submission(data, analysed=an) for (_i, data, _t), an in group],
                                                       auto_recluster=False)
                    for ((i, _d, _t), _an), outcome in zip(group, outcomes):
                        if isinstance(outcome, tuple):
                            stored += 1
                        elif isinstance(outcome, TriageError):
                            refuse(i, str(outcome))
                        else:
                            raise outcome
            else:
                keep = []
                for (i, data, submitted), an in zip(batch, analysed):
                    if an.assessment.error:
                        refuse(i, an.assessment.error)
                    else:
                        keep.append((data, an, submitted))
                for attempt in range(3):
                    try:
                        with self.store.session() as s:
                            rows = [self.intake.suggestion_row(d, an, t, key=None, idem=None) for d, an, t in keep]
                            s.add_all(rows)
                            s.flush()
                            s.add_all([_assessment_row(r.id, an.assessment) for r, (_d, an, _t) in zip(rows, keep)])
                        break
                    except IntegrityError:
                        # two random receipts alike (about one batch in 200 at 100k rows): new ones, again
                        if attempt == 2:
                            raise
                        log.info("导入：回执编号重复，本批重新编号 / import: a receipt collided; renumbering the batch")
                stored += len(keep)
            done = min(lo + self.IMPORT_BATCH, total)
            secs = time.perf_counter() - t0
            log.info("导入：%d / %d 行（已存 %d，未导入 %d；%.0f 行/秒） / import: %d of %d rows", done, total, stored,
                     failed, done / max(secs, 1e-9), done, total)
            if progress is not None:
                progress({"stage": "分析与写入", "done": done, "total": total, "seconds": round(secs, 1)})
        # the rows written without a topic get theirs now: wait out another worker's run (the lease)
        # and run again if staff decided one of its topics meanwhile (it then writes nothing)
        for _attempt in range(120):
            try:
                if self.clustering.recluster(progress=progress).get("skipped") != "decided meanwhile":
                    break
            except Conflict:
                log.info("导入：另一进程正在重新聚类，稍候重试 / import: a re-clustering is running elsewhere; waiting")
                time.sleep(5)
        else:
            log.warning("导入完成，但重新聚类未能完成：这些留言将在下次重新聚类时归入议题 / imported, but the "
                        "re-clustering did not finish: the next one gives these messages their topics")
        return {"stored": stored, "failed": failed}
