"""The workspace: the one door the CLI, the Prefect flows, the benches and notebooks come through.

A :class:`Workspace` is built once from :class:`Settings`. It holds the corpus store, the results
warehouse, the test-set registry and the LLM client, each built on first use (a command pays only for what
it touches, and the LLM client, with its response cache and its memory of dead servers, is shared by
everything the process does), and it opens searchers. Front ends call its methods and get plain results
(reports, records, rows); they import no storage module and never call into a storage object
(``tests/unit/test_boundaries.py``), so every front end indexes, synthesizes and evaluates the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from storage.corpus_store import CorpusStore
from storage.home import Home, MigrationReport, check_format
from storage.home import migrate as upgrade
from storage.llm_cache import ResponseCache
from storage.models import LATEST, ModelManifest, UnknownModelError, catalogue, read_manifest, resolve
from storage.object_store import explained, is_remote
from storage.quantized import Quantization
from storage.registry import UnknownCorpusError, check_name
from storage.upkeep import UpkeepReport, owner, recorded_versions, upkeep
from storage.vector_space import VectorSpace
from storage.views import views_table
from storage.warehouse import Warehouse
from tasks.adapt.examples import AdaptConfig
from tasks.adapt.run import AdaptReport
from tasks.adapt.run import adapt as adapt_model
from tasks.adapt.train import StepProgress
from tasks.evaluation import runs as sequence
from tasks.evaluation.compare import (
    Comparison,
    Cost,
    FrontierPoint,
    compare_runs,
    eval_frames,
    frontier,
    list_runs,
    resolve_run_id,
    run_row,
    trec_lines,
)
from tasks.evaluation.provenance import fallback_stats, fallback_warning
from tasks.evaluation.report import write_report
from tasks.evaluation.runs import Direct, Evaluation, Plan, RunResult, previous_runs, run_method
from tasks.evaluation.testsets import TestSet, TestSets
from tasks.ingest.embed import Embedder, check_truncation, installed_space, load_embedder, vector_space
from tasks.ingest.index import Progress, ReindexReport, reindex, resolve_corpus
from tasks.ingest.lattice import BRANCHING, LatticeReport, build_lattice
from tasks.ingest.onnx import QUANTISED, load_onnx_embedder
from tasks.ingest.sources import FieldMap, SourceFormat, SourceReport, read_source
from tasks.ingest.upgrade import upgrade_model
from tasks.ingest.views import ViewsReport, build_views
from tasks.leases import InUseError, exclusive, lock_path, shared
from tasks.llm.client import LLMClient, LLMConfig
from tasks.llm.failover import parse_fallbacks
from tasks.llm.judge import Judge, LLMJudge
from tasks.methods.feedback import Analyzer
from tasks.methods.registry import Method, parse_method
from tasks.methods.search import Ranking, Searcher
from tasks.methods.snippets import snippet
from tasks.settings import Chunking, Settings, get_settings
from tasks.synthetic.config import SynthesisConfig
from tasks.synthetic.generate import SynthesisReport, document_vectors, sample_documents, setup, synthesize
from tasks.synthetic.testset import AgreementResult, SyntheticReport, agreement, build_synthetic_testset

if TYPE_CHECKING:  # the module loads torch, which only PromptReps needs
    from tasks.ingest.promptreps import PromptReps, PromptRepsReport

QueryProgress = Callable[[str, int, int], None]  # (method, queries done, queries total)
_default: Workspace | None = None
_default_lock = threading.Lock()


@dataclass
class Hit:
    """One search result with the document's title and text, and its snippet (see tasks.methods.snippets)."""

    rank: int
    doc_id: str
    score: float
    title: str
    text: str
    snippet: str = ""
    highlights: tuple[tuple[int, int], ...] = ()  # spans of the query terms in the snippet


@dataclass
class Found:
    """The hits of one query, and whether (and why) its method fell back."""

    hits: list[Hit]
    fallback: str | None
    llm_errors: int
    warning: str | None  # shown when the fallback answered (see ZSR_FALLBACK_WARN_SHARE)


def embedder_factory(space: VectorSpace, settings: Settings) -> Callable[[], Embedder]:
    """A zero-argument loader, so commands that need no model never pay for loading one.

    The space's backend picks the runner, each keeping the model it loads for the process; the ONNX
    backends run on the CPU (``ZSR_DEVICE`` is torch's) and keep their exports under ``<home>/models``.
    """
    if space.backend in QUANTISED:
        return lambda: load_onnx_embedder(space, settings.home_dir / "models", settings.batch_size)
    return lambda: load_embedder(space, settings.device, settings.batch_size)


def open_searcher(settings: Settings, judge: Judge | None, corpus: str) -> Searcher:
    """A searcher over ``corpus`` in a workspace of its own: what a Ray worker evaluates with."""
    return Workspace(settings).searcher(corpus, judge)


def home_of(settings: Settings) -> Home:
    """The paths of a home, as storage takes them (storage reads no settings)."""
    return Home(
        settings.home_dir,
        settings.lancedb,
        settings.warehouse_dir,
        settings.testsets_dir,
        settings.storage_options,
    )


class Workspace:
    """Store, warehouse, test sets, LLM and searchers of one :class:`Settings`, behind one set of verbs."""

    def __init__(self, settings: Settings) -> None:
        """Check the home's on-disk format first, so a refused home is left exactly as it was.

        Raises:
            HomeFormatError: an older zsr wrote the home (``zsr migrate`` upgrades it), or a newer one did.
            ObjectStoreError: the object store holding the LanceDB did not answer.
        """
        self.settings = settings
        with explained(settings.lancedb, settings.storage_options):
            check_format(home_of(settings))

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        """The workspace of ``settings``; without, the process's own, built once per ``get_settings()``."""
        global _default
        if settings is not None:
            return cls(settings)
        current = get_settings()
        with _default_lock:
            if _default is None or _default.settings is not current:  # tests clear get_settings to switch
                _default = cls(current)
            return _default

    @staticmethod
    def migrate(
        settings: Settings | None = None, progress: Callable[[str], None] | None = None
    ) -> MigrationReport:
        """Upgrade a home an older zsr wrote to this zsr's format (``zsr migrate``); a current one is kept."""
        settings = settings or get_settings()
        with explained(settings.lancedb, settings.storage_options):
            return upgrade(home_of(settings), space_of=installed_space, progress=progress)

    # -- what it holds -------------------------------------------------------------------------------------
    @cached_property
    def store(self) -> CorpusStore:
        """The LanceDB store at the configured URI (a local folder is created on first use)."""
        s = self.settings
        if not is_remote(s.lancedb):
            Path(s.lancedb).mkdir(parents=True, exist_ok=True)
        quantization = Quantization(s.quantization, s.rescore, s.truncate_dims)
        return CorpusStore(s.lancedb, quantization, s.storage_options)

    @cached_property
    def warehouse(self) -> Warehouse:
        """The results warehouse (Parquet files and the catalog of views)."""
        return Warehouse(self.settings.warehouse_dir)

    @cached_property
    def testsets(self) -> TestSets:
        """The registered test sets."""
        return TestSets(self.settings.testsets_dir, lambda: self.store)

    @cached_property
    def llm(self) -> LLMClient:
        """The LLM client: response cache under ``$ZSR_HOME``, usage rows into the warehouse.

        Raises:
            ValueError: ``ZSR_LLM_FALLBACKS`` is malformed, or names a key variable that is not set.
        """
        settings = self.settings
        config = LLMConfig(
            model=settings.llm_model,
            fallbacks=parse_fallbacks(settings.llm_fallbacks),
            api_base=settings.llm_api_base,
            timeout=settings.llm_timeout,
            retry_seconds=settings.llm_retry_seconds,
            concurrency=settings.llm_concurrency,
        )
        usage = partial(self.warehouse.append, "llm_calls")
        if settings.ray_address:  # one limit on calls in flight for the cluster; batches spread over it
            from tasks.distributed.llm import SpreadLLMClient

            return SpreadLLMClient(settings.ray_address, config, settings.llm_cache_path, usage)
        return LLMClient(config, ResponseCache(settings.llm_cache_path), usage)

    def searcher(self, corpus: str, judge: Judge | None = None, where: str | None = None) -> Searcher:
        """A :class:`Searcher` over ``corpus``, with the model the corpus was indexed with.

        A new one each time (it reads the corpus's counts, which an ingest or a synthesis changes), over the
        model and LLM client this process already holds. ``judge`` defaults to ReDE-RF's LLM judge;
        ``where`` filters on document metadata (see :class:`Searcher`).
        """
        check_truncation(self.store.registry.corpus(corpus).space.model, self.settings.truncate_dims)
        return Searcher(
            self.store,
            corpus,
            self._embedder(corpus),
            judge=judge,
            llm_factory=lambda: self.llm,
            where=where,
            promptreps_factory=lambda: self.promptreps,
            embedder_for=lambda space: embedder_factory(space, self.settings)(),
        )

    @cached_property
    def promptreps(self) -> PromptReps:
        """The PromptReps LM of the settings (``ZSR_PROMPTREPS_MODEL``), loaded on first use."""
        from tasks.ingest.promptreps import load_promptreps

        settings = self.settings
        return load_promptreps(
            settings.promptreps_model,
            expand=settings.promptreps_expand,
            batch_size=settings.promptreps_batch_size,
        )

    def index_promptreps(self, corpus: str, progress: Progress | None = None) -> PromptRepsReport:
        """Build or bring up to date ``corpus``'s PromptReps index (only new and changed documents)."""
        from tasks.ingest.promptreps import index_promptreps

        with self.lease(corpus):
            return index_promptreps(self.store, corpus, self.promptreps, progress=progress)

    def _embedder(self, corpus: str) -> Callable[[], Embedder]:
        return embedder_factory(self.store.registry.corpus(corpus).space, self.settings)

    def _ingest_embedder(self, space: VectorSpace) -> Callable[[], Embedder]:
        """The model's loader in this process, or with ``ZSR_RAY_ADDRESS`` a pool of Ray actors running it.

        Only an ingest's passages go to the cluster: one query at search time is encoded faster here than
        one round trip takes.
        """
        load, address = embedder_factory(space, self.settings), self.settings.ray_address
        if address is None:
            return load
        from tasks.distributed.pool import PooledEmbedder

        return lambda: PooledEmbedder(address, load, self.settings.ray_actors)

    # -- corpora -------------------------------------------------------------------------------------------
    def ingest(
        self,
        source: Path,
        corpus: str,
        *,
        fmt: SourceFormat | None = None,
        fields: FieldMap | None = None,
        skip_bad: bool = False,
        keep_deleted: bool = False,
        model: str | None = None,
        chunking: Chunking | None = None,
        progress: Progress | None = None,
        delimiter: str = ",",
        compensate_only: bool = False,
    ) -> tuple[ReindexReport, SourceReport]:
        """Read ``source`` and (re-)index it as ``corpus``; returns what was indexed and what was skipped.

        ``model`` and ``chunking`` (default: the settings') apply to a new corpus; a corpus keeps the vector
        space it was indexed in, and asking for another chunking or backend alone is an error. ``model``
        (a name, a path, or a version of the corpus's adapted models) given for an indexed corpus in another
        space moves it there without downtime (:mod:`tasks.ingest.upgrade`, its report in
        ``report.upgrade``): the source is indexed in the current space first, then the new space is built
        beside it and switched to; ``compensate_only`` stops after the query drift map.

        Raises:
            ValueError: ``compensate_only`` without a move to another model.
            ObjectStoreError: the object store holding the LanceDB failed a request after its retries (what
                was committed stays; the same ingest run again resumes).
        """
        settings, store = self.settings, self.store
        check_name(corpus)
        model, adapted = self._adapted(corpus, model) if model else (None, None)
        read = read_source(
            source,
            fmt=fmt,
            fields=fields or FieldMap(),
            skip_bad=skip_bad,
            max_doc_bytes=settings.max_doc_bytes,
            delimiter=delimiter,
        )
        asked = {"embedding_model", "embedding_backend", "chunking"} & settings.model_fields_set
        explicit = model is not None or chunking is not None or bool(asked)
        requested = vector_space(
            model or settings.embedding_model,
            adapted.query_prefix if adapted else settings.query_prefix,  # the prefixes it was trained with
            adapted.passage_prefix if adapted else settings.passage_prefix,
            backend=settings.embedding_backend,
            chunking=chunking or settings.chunking,
        )
        with self.lease(corpus), explained(store.uri, settings.storage_options):
            registered = store.registry.get(corpus)
            target = requested if model and registered and registered.space != requested else None
            if compensate_only and target is None:
                raise ValueError(
                    f"--compensate-only applies to moving indexed corpus {corpus!r} to another model: "
                    "add --model NEW (a model name, a path or an adapted version)"
                )
            space = resolve_corpus(store, corpus, requested, explicit and target is None)
            report = reindex(
                store,
                corpus,
                read.documents,
                space,
                self._ingest_embedder(space),
                overlap=settings.chunk_overlap,
                batch_docs=settings.write_batch_size,
                keep_deleted=keep_deleted,
                skipped_ids=read.skipped_ids,
                skipped_without_id=read.skipped_without_id,
                ann_min_rows=settings.ann_min_rows,
                source=str(source),
                progress=progress,
            )
            store.whitening.refresh(corpus, space, settings.whiten_refit_share)
            if target is not None:
                moved = upgrade_model(
                    store,
                    corpus,
                    target,
                    embedder_factory(target, settings),
                    method=settings.drift_fit,
                    compensate_only=compensate_only,
                    overlap=settings.chunk_overlap,
                    batch_docs=settings.write_batch_size,
                    ann_min_rows=settings.ann_min_rows,
                    progress=progress,
                )
                if moved.switched:
                    store.whitening.refresh(corpus, target, settings.whiten_refit_share)
                report.upgrade = asdict(moved)
        return report, read

    def _adapted(self, corpus: str, model: str) -> tuple[str, ModelManifest | None]:
        """``model`` as given, or the folder and manifest of the corpus's adapted model of that version.

        Adapted versions live in ``<home>/models/<corpus>/<version>`` (``zsr adapt``'s catalogue); ``latest``
        is the newest. A name that is no version is a model name or path, as given.

        Raises:
            UnknownModelError: ``latest`` and the corpus has no adapted model.
        """
        if "/" in model:
            return model, None
        try:
            folder = resolve(self.settings.home_dir, corpus, model)
        except UnknownModelError:
            if model == LATEST:
                raise
            return model, None
        return str(folder), read_manifest(folder)

    def refresh_views(self, corpus: str) -> ViewsReport:
        """Bring title and query views and the expanded BM25 index in line with the corpus."""
        with self.lease(corpus):
            return build_views(self.store, corpus, self._embedder(corpus))

    def build_lattice(
        self, corpus: str, *, branching: int = BRANCHING, llm: bool = True, rebuild: bool = False
    ) -> LatticeReport:
        """Build or refresh ``corpus``'s LATTICE tree: the paths over changed documents are re-summarised.

        ``llm``: summaries written by the LLM (cached); without, extractive ones (enough for a simulation
        judge). ``rebuild``: cluster anew (the LLM cache answers the summaries of unchanged nodes).
        """
        with self.lease(corpus):
            return build_lattice(
                self.store, corpus, self.llm if llm else None, branching=branching, rebuild=rebuild
            )

    def corpora(self) -> list[dict[str, Any]]:
        """Every corpus by name: its registry entry, row counts, table versions and why it is incomplete."""
        store = self.store
        incomplete = store.registry.incomplete_corpora()
        registered: list[dict[str, Any]] = [info.as_row() for info in store.registry.corpora()]
        unknown = dict.fromkeys(registered[0] if registered else ("name", "model", "updated_at"))
        names = {r["name"] for r in registered}
        unregistered = [{**unknown, "name": name} for name in incomplete if name not in names]
        rows = (
            {
                **info,
                **{f"{k}_rows": v for k, v in store.counts(info["name"]).items()},
                **{f"{k}_version": v for k, v in store.versions(info["name"]).items()},
                "incomplete": incomplete.get(info["name"], ""),
            }
            for info in [*registered, *unregistered]
        )
        return sorted(rows, key=lambda row: row["name"])

    @contextmanager
    def lease(self, corpus: str, *testsets: str) -> Iterator[None]:
        """Hold shared leases on ``corpus`` (and on its ``testsets``) for the block: ``zsr rm`` refuses them.

        Every verb that reads or writes a corpus or a test set holds one (see :mod:`tasks.leases`).
        """
        locks = self.settings.home_dir / "locks"
        paths = [
            lock_path(locks, "corpus", corpus),
            *(lock_path(locks, "testset", corpus, t) for t in testsets),
        ]
        with shared(*paths):
            yield

    def remove_corpus(self, name: str, *, with_testsets: bool = False) -> dict[str, Any]:
        """Delete corpus ``name``: its registry row and every table of it (see ``CorpusStore.drop``).

        Its runs stay in the warehouse (they are history); its test sets are deleted too only with
        ``with_testsets``. An incomplete corpus (a first ingest, or a delete, that stopped) can be deleted.

        Raises:
            UnknownCorpusError: no corpus ``name``, complete or not.
            ValueError: test sets are registered for it and ``with_testsets`` is false.
            InUseError: a running job holds the corpus or one of its test sets.
        """
        store = self.store
        check_name(name)
        if store.registry.get(name) is None and not store.tables_of(name):
            known = ", ".join(row["name"] for row in self.corpora()) or "none"
            raise UnknownCorpusError(f"corpus {name!r} does not exist in {store.uri} (known: {known})")
        testsets = self.testsets.names(name)
        if testsets and not with_testsets:
            raise ValueError(
                f"corpus {name!r} has test sets ({', '.join(testsets)}); delete them first "
                "(`zsr rm testset`) or pass --with-testsets"
            )
        with exclusive(self._lock("corpus", name), f"corpus {name!r}"):
            for testset in testsets:
                self.remove_testset(name, testset)
            tables = store.drop(name)
        return {"corpus": name, "tables": tables, "testsets": testsets}

    def remove_testset(self, corpus: str, name: str) -> dict[str, Any]:
        """Delete a registered test set (its runs stay in the warehouse).

        Raises:
            UnknownTestSetError: it is not registered.
            InUseError: a running evaluation holds it.
        """
        if "/" in corpus + name or name not in self.testsets.names(corpus):
            self.testsets.remove(corpus, name)  # raises, naming the test sets that exist
        with exclusive(self._lock("testset", corpus, name), f"test set {name!r} of corpus {corpus!r}"):
            folder = self.testsets.remove(corpus, name)
        return {"corpus": corpus, "testset": name, "folder": str(folder)}

    def remove_run(self, run_id: str) -> dict[str, Any]:
        """Delete a run's files from every warehouse folder (``runs`` first: see ``Warehouse.delete_run``).

        Raises:
            LookupError: no file of ``run_id`` exists; the message lists the newest runs.
        """
        deleted = self.warehouse.delete_run(run_id)
        if not deleted:
            newest = ", ".join(self.runs(limit=10)["run_id"].to_list()) or "none"
            raise LookupError(f"run {run_id!r} does not exist (newest: {newest}; `zsr runs` lists them)")
        return {"run_id": run_id, "files": [str(p) for p in deleted]}

    def gc(self, apply: bool = False) -> UpkeepReport:
        """Storage upkeep (``zsr gc``), a dry run unless ``apply``: compact, and delete unrecorded versions.

        Tables, warehouse folders and the LLM cache are compacted, and table versions no recorded run
        points at are deleted (see ``storage.upkeep``, ``storage.packs``).

        Each corpus is leased exclusively while its tables are tidied; one a running job holds is skipped
        and reported, and so are the tables all corpora share.
        """
        runs = self.warehouse.query(
            "SELECT run_id, corpus, vector_space, documents_version, views_version FROM runs"
        ).to_pylist()
        corpora = {owner(table) for table in self.store.lance.names()} - {None}
        in_use: set[str] = set()
        with ExitStack() as held:
            for corpus in sorted(c for c in corpora if c is not None):
                try:
                    held.enter_context(exclusive(self._lock("corpus", corpus), f"corpus {corpus!r}"))
                except InUseError:
                    in_use.add(corpus)
            tables = upkeep(self.store.lance, recorded_versions(runs), in_use=in_use, apply=apply)
        cache = self.settings.llm_cache_path
        return UpkeepReport(
            apply,
            tables,
            self.warehouse.compact(apply),
            ResponseCache(cache).compact(apply) if cache.exists() else None,
        )

    def _lock(self, kind: str, *names: str) -> Path:
        return lock_path(self.settings.home_dir / "locks", kind, *names)

    # -- search --------------------------------------------------------------------------------------------
    def search(
        self,
        corpus: str,
        query: str,
        method: str | Method = "dense",
        k: int = 10,
        *,
        where: str | None = None,
    ) -> Ranking:
        """Top ``k`` ``(doc_id, score)`` for one query; ``where`` filters on metadata (``"year > 1990"``).

        Raises:
            FilterError: a bad ``where`` (a ``ValueError`` naming the bad part and the filterable keys).
        """
        with self.lease(corpus):
            return self.searcher(corpus, None, where).search(query, method, k)

    def search_many(
        self,
        corpus: str,
        queries: Mapping[str, str],
        method: str | Method = "dense",
        k: int = 10,
        *,
        where: str | None = None,
    ) -> dict[str, Ranking]:
        """Top ``k`` for many queries at once (dense queries are encoded in one batch); ``where`` as above."""
        with self.lease(corpus):
            return self.searcher(corpus, None, where).search_batch(queries, method, k)

    def dense_memory(self, corpus: str) -> tuple[int, int]:
        """Bytes dense search holds in memory for ``corpus``, and bytes of its float32 vectors on disk.

        The first: ``ZSR_QUANTIZATION``'s representation of its views (built now if not held yet); 0 when
        an ANN index searches them instead (bench/quantize.py compares the two).
        """
        space = self.store.registry.corpus(corpus).space
        held = self.store.search.matrices.get(views_table(corpus, space), self.store.search.quantization)
        table = self.store.views.table(corpus, space)
        return held.nbytes if held else 0, table.count_rows() * table.schema.field(
            "vector"
        ).type.list_size * 4

    @cached_property
    def analyzer(self) -> Analyzer:
        """Words to stems, as the full-text index reads them (snippets match query terms with it)."""
        return Analyzer()

    def find(
        self, corpus: str, query: str, method: str = "hybrid", k: int = 10, *, where: str | None = None
    ) -> Found:
        """Top ``k`` documents for one query with their titles and texts, and its fallback if it took one.

        ``where`` keeps documents whose metadata matches (``zsr search --where``), before the top ``k``.
        """
        with self.lease(corpus):
            engine = self.searcher(corpus, None, where)
            ranking = engine.search(query, method, k)
            fetched = self.store.documents.fetch(corpus, [h[0] for h in ranking], ["doc_id", "title", "text"])
        docs = {d["doc_id"]: d for d in fetched}
        trace = engine.last_trace["q"]
        share, errors = fallback_stats([trace])
        warn_share = self.settings.fallback_warn_share
        vector = trace.vector
        if vector is None and ranking and parse_method(method).name in ("dense", "hybrid"):
            vector = engine.encode([query], queries=True)[0]
        chunks = engine.chunks([doc_id for doc_id, _ in ranking])
        hits = []
        for rank, (doc_id, score) in enumerate(ranking, start=1):
            doc = docs[doc_id]
            found = snippet(query, chunks.get(doc_id, []), self.analyzer, vector, title=doc["title"] or "")
            hits.append(Hit(rank, doc_id, score, doc["title"], doc["text"], found.text, found.spans))
        return Found(
            hits,
            trace.fallback,
            trace.llm_errors,
            fallback_warning(method, share, 1, errors, warn_share, trace.fallback),
        )

    # -- synthetic queries and test sets -----------------------------------------------------------------
    def prepare_synthesis(
        self, corpus: str, config: SynthesisConfig
    ) -> Callable[[Callable[[int, int], None] | None], SynthesisReport]:
        """Set up synthetic queries for ``corpus`` (generator, document sample, filters) from ``config``.

        Returns the run, to be called with a progress callback (or ``None``): bad input (an unknown corpus,
        a bad examples file, an LLM setting) fails here, before the caller shows any progress.
        """
        engine = self.searcher(corpus)
        generator, filters = setup(config, lambda: self.llm)
        doc_ids = None
        if config.sample_docs:
            ids, vectors = document_vectors(self.store, corpus)
            doc_ids = sample_documents(ids, vectors, config.sample_docs, seed=config.seed)

        def run(progress: Callable[[int, int], None] | None) -> SynthesisReport:
            with self.lease(corpus):
                return synthesize(
                    self.store,
                    corpus,
                    generator,
                    style=config.style,
                    per_doc=config.per_doc,
                    doc_ids=doc_ids,
                    filters=filters,
                    search=engine.search_batch,
                    refilter=config.refilter,
                    progress=progress,
                )

        return run

    def forget_synthetic_queries(self, corpus: str) -> None:
        """Delete the stored synthetic queries of ``corpus`` (the LLM cache keeps every answer).

        For measuring a re-run answered from the cache; the views keep the queries until the next refresh.
        """
        self.store.synthetic.table(corpus).delete("true")

    def synthesize_testset(
        self,
        corpus: str,
        name: str,
        config: SynthesisConfig,
        *,
        methods: Sequence[str] = ("bm25", "dense", "hybrid"),
        pool_depth: int = 10,
        replace: bool = False,
    ) -> SyntheticReport:
        """Build and register a synthetic test set: ``config.sample_docs`` documents, judged pools.

        Raises:
            ValueError: ``config`` samples no documents, or no query survived the filters.
        """
        if config.sample_docs is None:
            raise ValueError("a synthetic test set is written from a sample of documents: set sample_docs")
        generator, filters = setup(config, lambda: self.llm)
        with self.lease(corpus):
            return build_synthetic_testset(
                self.store,
                corpus,
                name=name,
                generator=generator,
                judge=LLMJudge(self.llm),
                searcher=self.searcher(corpus),
                root=self.settings.testsets_dir,
                methods=methods,
                n_docs=config.sample_docs,
                per_doc=config.per_doc,
                pool_depth=pool_depth,
                seed=config.seed,
                filters=filters,
                replace=replace,
                warehouse=self.warehouse,
            )

    def agreement(
        self, corpus: str, human: str, synthetic: str, methods: Sequence[str], measure: str = "nDCG@10"
    ) -> AgreementResult:
        """How alike two registered test sets rank ``methods`` (Kendall tau), kept in the warehouse."""
        with self.lease(corpus, human, synthetic):
            human_set, synthetic_set = (
                self.testsets.load(corpus, human),
                self.testsets.load(corpus, synthetic),
            )
            return agreement(
                self.warehouse, self.searcher(corpus), human_set, synthetic_set, methods, measure=measure
            )

    # -- adapted models ------------------------------------------------------------------------------------
    def adapt(
        self,
        corpus: str,
        config: AdaptConfig,
        *,
        judge: Judge | Literal["llm"] | None = None,
        progress: StepProgress | None = None,
    ) -> AdaptReport:
        """Fine-tune ``corpus``'s model on its synthetic queries (``zsr adapt``; see ``tasks.adapt.run``).

        Hard negatives come from the corpus's dense search; the queries of every registered test set of the
        corpus are kept out of training (their queries only go to it, never their qrels). ``judge``: ``"llm"``
        is the LLM judge (ReDE-RF's single-token grader), ``None`` judges nothing (mnrl only).
        """
        chosen = LLMJudge(self.llm) if judge == "llm" else judge
        names = self.testsets.names(corpus)
        with self.lease(corpus, *names):
            tests = [pair for n in names for pair in self.testsets.load(corpus, n).queries.items()]
            engine = self.searcher(corpus)
            return adapt_model(
                self.store,
                corpus,
                self.settings.home_dir,
                config,
                search=lambda queries, k: engine.search_batch(queries, "dense", k),
                testset_queries=tests,
                judge=chosen,
                device=self.settings.device,
                progress=progress,
            )

    def models(self, corpus: str | None = None) -> list[dict[str, Any]]:
        """The published adapted models (of ``corpus``, or all), oldest first: their manifests' fields."""
        return [m.as_row() for m in catalogue(self.settings.home_dir, corpus)]

    # -- evaluation ----------------------------------------------------------------------------------------
    def evaluate(
        self,
        corpus: str,
        testset: str | TestSet,
        methods: Sequence[str],
        measures: Sequence[str] | None = None,
        *,
        depth: int | None = None,
        label: str = "",
        compare: bool = False,
        report: bool = False,
        judge: Judge | None = None,
        progress: QueryProgress | None = None,
        on_ray: bool = False,
    ) -> Evaluation:
        """Score methods on a test set into the warehouse: :func:`tasks.evaluation.runs.evaluate`, in process.

        ``judge`` judges for rede-rf and rerank (default: the LLM); ``progress`` gets (method, done, total).
        ``on_ray`` scores the methods side by side on the Ray cluster instead (:meth:`evaluate_on_ray`).
        """
        if on_ray:
            return self.evaluate_on_ray(
                corpus,
                [testset],
                methods,
                measures,
                depth=depth,
                label=label,
                compare=compare,
                report=report,
                judge=judge,
                progress=progress,
            )[0]
        steps = self._steps(judge, progress)
        testset_name = testset if isinstance(testset, str) else testset.name
        with self.lease(corpus, testset_name):
            return sequence.evaluate(
                steps,
                corpus,
                testset,
                methods,
                measures,
                depth=depth,
                label=label,
                compare=compare,
                report=report,
            )

    def evaluate_on_ray(
        self,
        corpus: str,
        testsets: Sequence[str | TestSet],
        methods: Sequence[str],
        measures: Sequence[str] | None = None,
        *,
        depth: int | None = None,
        label: str = "",
        compare: bool = False,
        report: bool = False,
        judge: Judge | None = None,
        progress: QueryProgress | None = None,
    ) -> list[Evaluation]:
        """One evaluation per test set, every (test set, method) a Ray task; this process publishes them.

        See :mod:`tasks.distributed.evaluation`: nothing is published before every run has come back.

        Raises:
            ValueError: ``ZSR_RAY_ADDRESS`` is not set.
        """
        address = self.settings.ray_address
        if address is None:
            raise ValueError("evaluating on Ray needs a cluster: set ZSR_RAY_ADDRESS (e.g. auto, host:6379)")
        from tasks.distributed.evaluation import evaluate_on_ray

        names = [t if isinstance(t, str) else t.name for t in testsets]
        with self.lease(corpus, *names):
            return evaluate_on_ray(
                address,
                self._steps(judge, progress),
                partial(open_searcher, self.settings, judge),
                corpus,
                testsets,
                methods,
                measures,
                depth=depth,
                label=label,
                compare=compare,
                report=report,
            )

    def _steps(self, judge: Judge | None, progress: QueryProgress | None) -> Direct:
        return Direct(
            self.warehouse, lambda name: self.searcher(name, judge), self.testsets.load, self.report, progress
        )

    def run_method(
        self, engine: Searcher, plan: Plan, method: Method, progress: Callable[[int, int], None] | None = None
    ) -> RunResult:
        """One step of the evaluation: ``method`` run, scored and published (the flow's task per method)."""
        on_query = (lambda _method, done, total: progress(done, total)) if progress else None
        return run_method(engine, plan, method, self.warehouse, on_query)

    def previous_runs(self, plan: Plan) -> dict[str, dict[str, Any]]:
        """The runs of the latest earlier evaluation with the plan's label (see ``previous_runs``)."""
        return previous_runs(self.warehouse, plan)

    def runs(self, corpus: str | None = None, limit: int = 20) -> pl.DataFrame:
        """Newest runs first, with nDCG@10 and R@100 where measured, and mean latency."""
        return list_runs(self.warehouse, corpus, limit)

    def compare(self, run_a: str, run_b: str, measure: str = "nDCG@10", top: int = 5) -> Comparison:
        """Paired comparison of two runs (full ids or unique suffixes), movers with their query texts."""
        run_a, run_b = resolve_run_id(self.warehouse, run_a), resolve_run_id(self.warehouse, run_b)
        texts = self._query_texts(run_row(self.warehouse, run_a))
        return compare_runs(self.warehouse, run_a, run_b, measure, top, texts)

    def frontier(self, run_id: str, measure: str = "nDCG@10", cost: Cost = "calls") -> list[FrontierPoint]:
        """The methods of ``run_id``'s evaluation by LLM ``cost`` per query, the Pareto frontier marked."""
        return frontier(self.warehouse, resolve_run_id(self.warehouse, run_id), measure, cost)

    def export_trec(self, run_id: str) -> list[str]:
        """The run's ranking as TREC run lines."""
        run_id = resolve_run_id(self.warehouse, run_id)
        return trec_lines(self.warehouse, run_id)

    def report(self, run_id: str, measure: str = "nDCG@10") -> Path:
        """The HTML report of the evaluation of ``run_id``, under ``<warehouse>/reports/<eval_id>/``."""
        run_id = resolve_run_id(self.warehouse, run_id)
        runs, metrics, query_metrics = eval_frames(self.warehouse, run_id)
        first = runs.row(0, named=True)
        return write_report(
            runs,
            metrics,
            query_metrics,
            self.warehouse.root / "reports" / first["eval_id"],
            title=f"{first['corpus']} / {first['testset']}",
            measure=measure,
            queries=self._query_texts(first),
            warn_share=self.settings.fallback_warn_share,
            frontier=frontier(self.warehouse, run_id, measure),
        )

    def sql(self, statements: str, params: Sequence[Any] | None = None) -> pl.DataFrame | None:
        """People's SQL over the warehouse, read-only by construction (see ``Warehouse.reader``).

        Returns the last statement's result (``None`` when it has none).

        Raises:
            ValueError: a statement that is not a query, or any error DuckDB reports.
        """
        import duckdb

        with self.warehouse.reader() as con:
            try:
                self.warehouse.check_read_only(con, statements)
                relation = con.sql(statements, params=list(params) if params is not None else None)
                return None if relation is None else relation.pl()
            except duckdb.Error as error:
                raise ValueError(str(error)) from None

    def _query_texts(self, run: dict[str, Any]) -> dict[str, str] | None:
        """The query texts of a run's test set; ``None`` if it was removed since (reports go on without)."""
        try:
            return self.testsets.load(run["corpus"], run["testset"]).queries
        except (LookupError, ValueError):
            return None
