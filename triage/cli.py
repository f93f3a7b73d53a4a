"""The ``triage`` command: train, evaluate, classify, demo.

User errors (bad file, missing column, broken config) print one clear line and exit with 2;
only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from triage.errors import InputFileError, TriageError, UsageError

log = logging.getLogger("triage")

DEMO_FILE = Path(__file__).resolve().parent.parent / "corpora" / "demo.csv"


def _frame_for_training(args: argparse.Namespace):
    from triage.assess.features import join_columns, prepare_texts
    from triage.assess.model import default_cues
    from triage.pipeline import validate_text
    from triage.io.tables import read_table, require_column, resolve_text_columns

    table = read_table(args.data)
    for e in table.errors:
        log.warning("第 %d 行无法读取，已跳过：%s", e.line, e.reason)
    cols = resolve_text_columns(table.frame, args.text_col)
    require_column(table.frame, args.label_col, "标签")
    for c in (args.scope_col, args.department_col, args.group_col):
        if c:
            require_column(table.frame, c, "")
    texts = join_columns(table.frame, cols)
    labels = table.frame[args.label_col].astype("string").fillna("").str.strip()
    keep = np.array([validate_text(t) is None and bool(lab) for t, lab in zip(texts, labels)])
    dropped = int((~keep).sum())
    if dropped:
        log.warning("%d 行文本或标签为空，未用于训练", dropped)
    frame = table.frame[keep].reset_index(drop=True)
    texts = texts[keep].reset_index(drop=True)
    cues = default_cues()
    encoder = None
    if getattr(args, "embeddings", False):
        from triage.embed.encoders import CachedEncoder, get_encoder

        encoder = CachedEncoder(get_encoder("use"))
    t0 = time.perf_counter()
    # normalising, masking (the name NER) and segmenting is most of a training's time: on every core
    prepared = prepare_texts(texts.tolist(), cues, encoder, workers=os.cpu_count() or 1)
    log.info("训练：规范化、脱敏与分词完成（%d 条，%.1f 秒） / training: texts prepared", len(prepared),
             time.perf_counter() - t0)

    def col(name: str | None):
        if not name:
            return None
        return frame[name].astype("string").fillna("").str.strip().tolist()

    groups = col(args.group_col)
    if groups is not None:  # a message without a topic is its own group
        groups = [g if g else f"_row{i}" for i, g in enumerate(groups)]
    return prepared, col(args.label_col), col(args.scope_col), col(args.department_col), groups, cues


def cmd_train(args: argparse.Namespace) -> int:
    from triage.assess.model import TrainSpec, train_bundle

    prepared, y, scope, dept, groups, cues = _frame_for_training(args)
    if scope is not None and any(s and s not in ("group", "individual") for s in scope):
        bad = sorted({s for s in scope if s and s not in ("group", "individual")})[:5]
        raise InputFileError(f"范围列 {args.scope_col} 只能取 group / individual，发现：{', '.join(bad)}")
    from triage.assess.classify import FeatureConfig

    spec = TrainSpec(domain=y, scope=scope, department=dept, groups=groups,
                     features=FeatureConfig(embedding="use" if args.embeddings else None))
    t0 = time.perf_counter()
    bundle = train_bundle(prepared, spec, cues, evaluate=not args.no_eval, source=str(args.data),
                          version=args.version)
    out = bundle.save(args.out)
    log.info("model %s saved to %s in %.1fs", bundle.version, out, time.perf_counter() - t0)
    for task, m in bundle.manifest["metrics"].items():
        if "plain_baseline" in m:
            print(f"{task}: 交叉验证 macro-F1 {m['macro_f1']:.3f}，同折朴素基线（TF-IDF + LinearSVC）"
                  f"{m['plain_baseline']['macro_f1']:.3f} / cross-validated macro-F1 {m['macro_f1']:.3f}, "
                  f"plain baseline {m['plain_baseline']['macro_f1']:.3f} on the same folds", file=sys.stderr)
    print(json.dumps({"model": str(out), "version": bundle.version, "metrics": bundle.manifest["metrics"]},
                     ensure_ascii=False, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from triage.assess.classify import feature_config_from_manifest
    from triage.assess.model import ModelBundle, TextClassifierConfig, cross_validate, default_scope_config, metrics_report

    if args.topics:
        return _evaluate_topics(args)
    if args.encoder or args.cache or args.place_col:
        raise UsageError("--encoder、--cache 与 --place-col 只用于 --topics（分类评估使用模型自带的编码器设置）/ "
                         "--encoder, --cache and --place-col apply to --topics only")
    if args.model and not args.embeddings:
        args.embeddings = bool(ModelBundle.load(args.model).encoder_spec)
    prepared, y, scope, dept, groups, cues = _frame_for_training(args)
    # the department of individual petitions is scored on the rows that name one (as it is trained)
    has_dept = [i for i, d in enumerate(dept or []) if d]
    report: dict = {"data": str(args.data), "rows": len(y)}
    if args.cv:
        bundle = ModelBundle.load(args.model) if args.model else None
        cfgs = bundle.manifest["configs"] if bundle else {}
        emb_cols = tuple(c for c in prepared.columns if str(c).startswith("emb"))
        fcfg = feature_config_from_manifest(cfgs.get("features"), embedding_columns=emb_cols,
                                            embedding="use" if emb_cols else None)
        fcfg.cue_columns = tuple(cues.columns) if fcfg.cue_features else ()
        report["method"] = f"GroupKFold({args.folds}) by {args.group_col or 'row'}: whole topics held out"
        dcfg = TextClassifierConfig(**cfgs["domain"]) if cfgs.get("domain") else TextClassifierConfig()
        report["domain"] = cross_validate(prepared, y, groups, fcfg, dcfg, args.folds)
        if scope is not None:
            scfg = TextClassifierConfig(**cfgs["scope"]) if cfgs.get("scope") else default_scope_config()
            report["scope"] = cross_validate(prepared, scope, groups, fcfg, scfg, args.folds)
        if has_dept:
            dcfg2 = TextClassifierConfig(**cfgs["department"]) if cfgs.get("department") else TextClassifierConfig()
            report["department"] = cross_validate(prepared.iloc[has_dept].reset_index(drop=True),
                                                  [dept[i] for i in has_dept],
                                                  [groups[i] for i in has_dept] if groups else None,
                                                  fcfg, dcfg2, args.folds)
    else:
        bundle = ModelBundle.load(args.model)
        report["model"] = bundle.version
        report["method"] = "held-out file scored by the given model"
        X = bundle.transform(prepared)
        report["domain"] = metrics_report(y, bundle.domain.predict(X))
        if scope is not None and bundle.scope is not None:
            report["scope"] = metrics_report(scope, bundle.scope.predict(X))
        if dept is not None:
            if bundle.department is None:
                raise UsageError(f"模型 {bundle.version} 没有部门分类器，无法评估 --department-col / "
                                 "this model has no department classifier")
            if has_dept:
                report["department"] = metrics_report([dept[i] for i in has_dept],
                                                      bundle.department.predict(X[has_dept]))
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def _evaluate_topics(args: argparse.Namespace) -> int:
    from triage.candidates import build_candidates
    from triage.topics.evaluation import place_quality, topic_quality
    from triage.pipeline import Triage
    from triage.io.tables import read_table, require_column, resolve_text_columns

    tri = Triage.load(args.model)
    table = read_table(args.data)
    cols = resolve_text_columns(table.frame, args.text_col)
    gold_col = args.group_col or "topic"
    require_column(table.frame, gold_col, "主题")
    t0 = time.perf_counter()
    res = build_candidates(tri, table.frame, cols, encoder=_encoder(args))
    report = {"data": str(args.data), "rows": len(table.frame), "encoder": _encoder(args).name,
              "seconds": round(time.perf_counter() - t0, 1),
              "topics": topic_quality(res.members["topic_id"].tolist(), table.frame[gold_col].fillna("").tolist())}
    if args.place_col:
        require_column(table.frame, args.place_col, "地点")
        report["places"] = place_quality(res.members["place_found"].tolist(), table.frame[args.place_col].fillna("").tolist())
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from triage.batch.runner import BatchConfig, classify_source, file_target

    previous = {k: v for k, v in (("domain", args.previous_col), ("scope", args.previous_scope_col),
                                  ("committee", args.previous_committee_col)) if v}
    cfg = BatchConfig(model_dir=args.model, text_columns=args.text_col, workers=args.workers, quiet=args.quiet,
                      chunk_rows=args.chunk_rows, max_chars=args.max_chars, previous=previous,
                      skip_existing=args.skip_existing, restart=args.restart, engine=args.engine,
                      scheduler=args.scheduler, work_dir=args.work_dir, evidence=args.evidence)
    if args.from_db:
        from triage.io.databases import DbSource

        if not args.query:
            raise InputFileError("--from-db 需要 --query（带 ORDER BY 的 SELECT）/ --from-db needs --query")
        source = DbSource(args.from_db, args.query)
    elif args.input:
        from triage.io.streams import open_source

        source = open_source(args.input)
    else:
        raise InputFileError("请给出输入文件，或 --from-db URL --query SQL / no input given")
    if args.to_table:
        from triage.io.databases import table_target

        target = table_target(args.to_db or args.from_db, args.to_table, replace=args.replace, work_dir=args.work_dir)
    elif args.output:
        target = file_target(args.output, args.work_dir)
    else:
        raise InputFileError("请用 -o 指定输出文件，或 --to-table 指定结果表 / no output given")
    summary = classify_source(source, target, cfg)
    print(json.dumps(summary, ensure_ascii=False), file=sys.stderr if args.output == "-" else sys.stdout)
    return 0 if summary["processed"] or summary["skipped"] or not summary["total"] else 1


#: ``--user-col`` and friends → the column names the topic stages read (triage.candidates.COLUMN_ALIASES)
PEOPLE_COLUMNS = {"user_col": "submitter", "support_col": "support", "oppose_col": "oppose", "time_col": "submitted_at"}


def _people_columns(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """Rename the columns named by --user-col/--support-col/--oppose-col/--time-col to the names the
    topic stages read; without the flags, common names (留言用户, 点赞数, 反对数, 留言时间 …) are detected."""
    from triage.io.tables import require_column

    rename = {}
    for flag, canonical in PEOPLE_COLUMNS.items():
        col = getattr(args, flag, None)
        if col:
            require_column(frame, col, "")
            rename[col] = canonical
    if not rename:
        return frame
    clash = [c for c in rename.values() if c in frame.columns and c not in rename]
    return frame.drop(columns=clash).rename(columns=rename)


def cmd_topics(args: argparse.Namespace) -> int:
    from triage.candidates import build_candidates
    from triage.pipeline import Triage
    from triage.io.tables import read_table, resolve_text_columns, write_table

    tri = Triage.load(args.model)
    table = read_table(args.input)
    for e in table.errors:
        log.warning("第 %d 行无法读取，已跳过：%s", e.line, e.reason)
    cols = resolve_text_columns(table.frame, args.text_col)
    res = build_candidates(tri, _people_columns(table.frame, args), cols, encoder=_encoder(args))
    out = Path(args.output)
    write_table(res.topics, out)
    members_path = out.with_name(f"{out.stem}.members{out.suffix}")
    write_table(res.members, members_path)
    if len(res.themes):
        write_table(res.themes.assign(topics=res.themes["topics"].map("、".join),
                                      places=res.themes["places"].map("、".join)),
                    out.with_name(f"{out.stem}.themes{out.suffix}"))
    print(json.dumps({"topics": len(res.topics), "themes": len(res.themes), "messages": len(res.members),
                      "output": str(out), "members": str(members_path)}, ensure_ascii=False))
    if not args.quiet:
        for _, r in res.topics.head(args.top).iterrows():
            print(f"{r['rank']:>3}. [{r['heat']:.3f}] {r['label']}  ({r['submitters']} 位群众 / {r['size']} 条留言) "
                  f"{r['verdict']} → {r['committee'] or r['department']}", file=sys.stderr)
    return 0


def _encoder(args: argparse.Namespace):
    from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder

    cache = EmbeddingCache(args.cache) if getattr(args, "cache", None) else None
    return CachedEncoder(get_encoder(getattr(args, "encoder", None)), cache)


def cmd_demo(args: argparse.Namespace) -> int:
    from triage.pipeline import Triage
    from triage.io.tables import read_table, resolve_text_columns
    from triage.assess.features import join_columns

    tri = Triage.load(args.model)
    table = read_table(args.file)
    texts = join_columns(table.frame, resolve_text_columns(table.frame, None)).tolist()
    results = tri.assess_texts(texts)
    names = tri.taxonomy.scopes
    print(f"模型 {tri.version} · {len(texts)} 条留言 · {args.file}\n")
    for i, (t, a) in enumerate(zip(texts, results), start=1):
        snippet = a.text.replace("\n", " ")
        snippet = snippet[:48] + ("…" if len(snippet) > 48 else "")
        if a.error:
            print(f"{i:>3}. [无法处理] {a.error}")
            continue
        ev = "、".join(w for w, _ in a.domain_evidence[:3])
        print(f"{i:>3}. {snippet}\n     领域 {a.domain} ({a.domain_confidence:.2f}; {ev}) · "
              f"{names.get(a.scope or '', a.scope)} ({a.scope_confidence:.2f}) · {a.route.name}")
    if args.no_topics:
        return 0
    from triage.candidates import build_candidates

    res = build_candidates(tri, table.frame, resolve_text_columns(table.frame, None), encoder=_encoder(args))
    print(f"\n候选议题（按群众人数、再按热度排序，共 {len(res.topics)} 个；{len(res.themes)} 个跨地点主题）")
    for _, r in res.topics.head(args.top).iterrows():
        print(f"{r['rank']:>3}. 热度 {r['heat']:.3f} · {r['label']} · {r['size']} 条/{r['submitters']} 人 · "
              f"{r['verdict']} → {r['committee'] or r['department']}")
        print(f"     关键词：{r['keywords']}；{r['principles']}")
    if len(res.themes):
        print("\n跨地点主题（同一问题在多个地点，按群众人数、再按热度排序）")
        for _, r in res.themes.head(args.top).iterrows():
            print(f"{r['rank']:>3}. 热度 {r['heat']:.3f} · {r['label']} · {len(r['topics'])} 个议题 · "
                  f"{'、'.join(r['places']) or '地点不详'} · {r['size']} 条/{r['submitters']} 人 → {r['committee']}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from triage.store.database import Store

    store = Store(args.database)
    if args.keys_cmd == "create":
        row, key = store.create_key(args.role, args.name or "", args.unmask, args.rate)
        print(f"# 密钥 #{row.id}（{row.role}{'，可查看个人信息' if row.can_unmask else ''}）只显示这一次，请妥善保存",
              file=sys.stderr)
        print(key)  # the last line of output, for scripts
    elif args.keys_cmd == "list":
        for k in store.list_keys():
            state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
            print(f"{k.id}\t{k.role}\t{k.name}\t{k.prefix}…\t{'unmask' if k.can_unmask else '-'}\t{state}")
    elif args.keys_cmd == "revoke":
        if not store.revoke_key(args.id, "cli"):
            raise TriageError(f"密钥 {args.id} 不存在或已吊销 / no such active key")
        print(f"revoked {args.id}")
    return 0


def _check_masker(store) -> None:
    """A store whose messages were masked by an older masker says so at start, with the command."""
    from sqlalchemy import func, select

    from triage.store.database import Suggestion
    from triage.text.normalise import MASKER_VERSION

    have = store.get_setting("masker_version")
    if have == MASKER_VERSION:
        return
    with store.session() as s:
        n = s.execute(select(func.count()).select_from(Suggestion)).scalar_one()
        if not n:   # nothing stored yet: whatever comes is masked by this version
            store.set_setting(s, "masker_version", MASKER_VERSION)
            return
    log.warning("库中 %d 条留言由较早的脱敏规则（%s）处理，部分个人信息可能未遮盖；请运行 `triage remask` / "
                "%d stored messages were masked by an older masker (%s): run `triage remask`",
                n, have or "未记录", n, have or "unrecorded")


def cmd_remask(args: argparse.Namespace) -> int:
    """Mask every stored message again with today's masker (after an upgrade that masks more)."""
    from triage.office.common import Actor, Conflict
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Store

    store = Store(args.database)
    office = Office(store, Triage.load(args.model))
    out = office.history.remask()
    if out["changed"]:
        # topics' places, keywords and labels were made from the old rows: one re-clustering redoes
        # them (decided topics keep what staff decided, as at every re-clustering)
        try:
            out["recluster"] = office.clustering.recluster(Actor("triage remask", "admin"))
        except Conflict as exc:
            log.warning("%s", exc)
            out["recluster"] = {"skipped": "running elsewhere: the next re-clustering refreshes the topics"}
    print(json.dumps(out, ensure_ascii=False, default=str))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """Evaluate every subscription and deliver what is due, once (for cron; the service also does this
    on its own schedule). Several runs at once, or beside the service, never send an alert twice."""
    from triage.office.alerts import AlertEngine
    from triage.store.database import Store

    print(json.dumps(AlertEngine(Store(args.database)).run_once(), ensure_ascii=False))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Load past suggestions into the store (and cluster them once)."""
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Store
    from triage.io.tables import read_table, resolve_text_columns

    store = Store(args.database)
    if args.if_empty:
        from sqlalchemy import func, select

        from triage.store.database import Suggestion

        with store.session() as s:
            if s.execute(select(func.count()).select_from(Suggestion)).scalar_one():
                return 0
    table = read_table(args.file)
    for e in table.errors:
        log.warning("第 %d 行无法读取，已跳过：%s", e.line, e.reason)
    office = Office(store, Triage.load(args.model))
    res = office.history.import_frame(_people_columns(table.frame, args), resolve_text_columns(table.frame, args.text_col),
                              lines=table.lines)
    print(json.dumps(res, ensure_ascii=False))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import subprocess

    from triage.store.database import Store

    # each request is small: one BLAS thread per worker thread avoids oversubscribing the cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # the sentence encoder's batches are large enough to use threads: the cores shared by the workers
    os.environ.setdefault("TRIAGE_ENCODER_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, args.workers))))
    if args.database:
        os.environ["TRIAGE_DATABASE_URL"] = args.database
    if args.model:
        os.environ["TRIAGE_MODEL"] = args.model
    if args.workers > 1:   # the workers' metrics, summed at /metrics (prometheus_client multiprocess mode)
        import shutil
        import tempfile

        mdir = Path(tempfile.gettempdir()) / f"triage-metrics-{args.port}"
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    store = Store(args.database)          # migrations run once, here, not in every worker
    os.environ["TRIAGE_MIGRATED"] = "1"
    _check_masker(store)
    if args.demo:
        # in a child process: the server's workers load their own model; this one is freed at once
        cmd = [sys.executable, "-m", "triage.cli", "import", str(DEMO_FILE), "--if-empty"]
        if args.model:
            cmd += ["--model", args.model]
        subprocess.run(cmd, check=True)
        if not store.list_keys():
            _row, key = store.create_key("staff", "demo staff", can_unmask=True)
            print(f"首次启动：已创建工作人员密钥（只显示一次）/ first start, a staff key (shown once):\n  {key}",
                  file=sys.stderr)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"审核页面 / review page: http://{host}:{args.port}/review/ （工作人员密钥登录 / staff key）", file=sys.stderr)
    print(f"triage 服务 / service: http://{host}:{args.port}/docs （API 文档 / API docs）；"
          f"数据库 / database: {store.url.split('@')[-1]}", file=sys.stderr)
    from service.server import serve

    serve(args.host, args.port, args.workers, log_level="warning" if args.quiet else "info", access_log=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triage", description="政协“有事来协商”留言分拣：领域、群众性/个人诉求、专委会/部门")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    def people_args(sp: argparse.ArgumentParser) -> None:
        """Who wrote, who agreed, when: heat counts citizens (default: common names are detected)."""
        sp.add_argument("--user-col", help="submitter id column (detected: 留言用户, 用户, submitter …)")
        sp.add_argument("--support-col", help="likes / co-signatures column (detected: 点赞数, 附议数, support)")
        sp.add_argument("--oppose-col", help="oppositions column, subtracted from support (detected: 反对数)")
        sp.add_argument("--time-col", help="submission time column (detected: 留言时间, 时间, submitted_at …)")

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", required=True, help="CSV / XLSX / JSONL / Parquet")
        sp.add_argument("--text-col", action="append", help="text column; repeat to join title + body")
        sp.add_argument("--label-col", default="domain")
        sp.add_argument("--scope-col", default=None, help="group / individual labels (optional)")
        sp.add_argument("--department-col", default=None, help="department of individual petitions (optional)")
        sp.add_argument("--group-col", default=None, help="topic id: whole topics are kept out of training folds")
        sp.add_argument("--embeddings", action="store_true", help="add USE sentence embeddings as features")

    t = sub.add_parser("train", help="train a model directory from a labelled file")
    data_args(t)
    t.add_argument("--out", required=True)
    t.add_argument("--version", default=None)
    t.add_argument("--no-eval", action="store_true", help="skip cross-validated metrics")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="JSON report: accuracy, macro-F1, per class")
    data_args(e)
    e.add_argument("--model", default=None)
    e.add_argument("--cv", action="store_true", help="group k-fold on the data instead of scoring a model")
    e.add_argument("--folds", type=int, default=5)
    e.add_argument("--topics", action="store_true", help="clustering quality (ARI, V-measure) against --group-col")
    e.add_argument("--place-col", default=None, help="with --topics: place extraction precision/recall")
    e.add_argument("--encoder", default=None, help="with --topics: sentence encoder (use, hashing, a directory)")
    e.add_argument("--cache", default=None, help="with --topics: embedding cache file")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("classify", help="add domain / scope / committee columns to a file or a table",
                       description="Large inputs are streamed in chunks over all cores; a stopped run resumes "
                                   "when the same command is run again (see README: batch reclassification).")
    c.add_argument("input", nargs="?", help="CSV / TSV / XLSX / JSONL / Parquet (or --from-db)")
    c.add_argument("-o", "--output", help="output file (same formats; '-' for CSV on stdout)")
    c.add_argument("--model", default=None)
    c.add_argument("--text-col", action="append")
    c.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("--chunk-rows", type=int, default=2000, help="records per chunk (and per checkpoint)")
    c.add_argument("--max-chars", type=int, default=20000, help="longer texts are reported, not classified")
    c.add_argument("--evidence", action="store_true",
                   help="fill domain_evidence (the words that weighed most for the domain; about 10%% slower)")
    c.add_argument("--previous-col", help="column with the previous domain: writes OUTPUT.changes.csv")
    c.add_argument("--previous-scope-col", help="column with the previous scope (group / individual)")
    c.add_argument("--previous-committee-col", help="column with the previous committee")
    c.add_argument("--skip-existing", metavar="COL", help="leave rows whose COL already has a value (counted as skipped)")
    c.add_argument("--restart", action="store_true", help="discard an interrupted run's work and start over")
    c.add_argument("--work-dir", help="checkpoint directory (default: OUTPUT.partial.d)")
    c.add_argument("--from-db", metavar="URL", help="SQLAlchemy URL to read from (with --query)")
    c.add_argument("--query", help="SELECT … ORDER BY a unique key (the order makes a run resumable)")
    c.add_argument("--to-table", metavar="NAME", help="write the results into a new table")
    c.add_argument("--to-db", metavar="URL", help="database for --to-table (default: the --from-db one)")
    c.add_argument("--replace", action="store_true", help="with --to-table: replace an existing table")
    c.add_argument("--engine", choices=["local", "dask"], default="local")
    c.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler, e.g. tcp://host:8786 (default: a local cluster)")
    c.set_defaults(func=cmd_classify)

    tp = sub.add_parser("topics", help="ranked candidate topics (+ OUT.members, OUT.themes)")
    tp.add_argument("input")
    tp.add_argument("-o", "--output", required=True)
    tp.add_argument("--model", default=None)
    tp.add_argument("--text-col", action="append")
    tp.add_argument("--encoder", default=None, help="use (default) | hashing | a local sentence-transformers directory")
    tp.add_argument("--cache", default=None, help="SQLite file caching embeddings between runs")
    tp.add_argument("--top", type=int, default=20)
    tp.add_argument("--quiet", action="store_true")
    people_args(tp)
    tp.set_defaults(func=cmd_topics)

    k = sub.add_parser("keys", help="API keys: create (printed once, as the last line) / list / revoke")
    k.add_argument("--database", default=None, help="SQLAlchemy URL (default: TRIAGE_DATABASE_URL or var/triage.db)")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ksub.add_parser("create")
    kc.add_argument("--role", required=True, choices=["portal", "staff", "admin"])
    kc.add_argument("--name", default="")
    kc.add_argument("--unmask", action="store_true", help="may see personal data (every look is audited)")
    kc.add_argument("--rate", type=int, default=None, help="requests per minute (0 = unlimited; default by role)")
    ksub.add_parser("list")
    kr = ksub.add_parser("revoke")
    kr.add_argument("id", type=int)
    k.set_defaults(func=cmd_keys)

    rm = sub.add_parser("remask", help="mask every stored message again with this version's masker")
    rm.add_argument("--database", default=None)
    rm.add_argument("--model", default=None)
    rm.set_defaults(func=cmd_remask)

    al = sub.add_parser("alerts", help="alerts and digests: `triage alerts run` evaluates and delivers once")
    al.add_argument("action", choices=["run"])
    al.add_argument("--database", default=None, help="SQLAlchemy URL (default: TRIAGE_DATABASE_URL or var/triage.db)")
    al.set_defaults(func=cmd_alerts)

    im = sub.add_parser("import", help="load past suggestions into the store and cluster them")
    im.add_argument("file")
    im.add_argument("--database", default=None)
    im.add_argument("--model", default=None)
    im.add_argument("--text-col", action="append")
    im.add_argument("--if-empty", action="store_true", help="only when the store holds no suggestion yet")
    people_args(im)
    im.set_defaults(func=cmd_import)

    sv = sub.add_parser("serve", help="the API (and review page) on embedded defaults")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1)
    sv.add_argument("--database", default=None, help="SQLAlchemy URL (default: SQLite file var/triage.db)")
    sv.add_argument("--model", default=None)
    sv.add_argument("--demo", action="store_true", help="on first start, load corpora/demo.csv and create a staff key")
    sv.add_argument("--quiet", action="store_true")
    sv.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="print the triage of the demo file")
    d.add_argument("--file", default=str(DEMO_FILE))
    d.add_argument("--model", default=None)
    d.add_argument("--no-topics", action="store_true")
    d.add_argument("--top", type=int, default=10)
    d.add_argument("--encoder", default=None)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except TriageError as exc:
        print(f"错误 / error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("已中断 / interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
