"""The consultation office of one worker: its small services over the store, built and wired once.

Usable without the service (the FastAPI routes call the services directly). State lives in the
:class:`~triage.store.database.Store`; this process keeps only rebuildable caches: the loaded model
and the incremental topic index. Each service worker has its own index; two workers may each open a
topic for the same new problem at the same moment, and the next re-clustering merges them
(DESIGN.md). Staff decisions pin a topic: re-clustering never touches a pinned topic or its members.

The services, each in its own module (lower ones never call higher ones):

* :class:`~triage.office.intake.IntakeDesk` (``office.intake``): validation, idempotency, analysis,
  assignment to a topic; the portal's live hints;
* :class:`~triage.office.views.Views` (``office.views``): receipts, topic lists, one topic, 回音壁;
* :class:`~triage.office.decisions.Decisions` (``office.decisions``): the eight staff actions and the lifecycle;
* :class:`~triage.office.clustering.ClusteringCoordinator` (``office.clustering``): when to re-cluster,
  the lease, background and settle runs; :class:`~triage.office.reclustering.Reclustering` one run;
* :class:`~triage.office.index.TopicIndexKeeper` (``office.index``): this worker's topic index;
* :class:`~triage.office.figures.TopicFigures` (``office.figures``): a topic's figures at intake;
* :class:`~triage.office.history.History` (``office.history``): bulk import, re-masking.
"""

from __future__ import annotations

from triage.office.clustering import ClusteringCoordinator
from triage.office.common import OfficeConfig, OfficeState
from triage.office.decisions import Decisions
from triage.office.figures import TopicFigures
from triage.office.history import History
from triage.office.index import TopicIndexKeeper
from triage.office.intake import IntakeDesk
from triage.office.reclustering import Reclustering
from triage.office.views import Views
from triage.pipeline import Triage
from triage.store.database import Store


class Office:
    """One worker's office: the shared state and the services built on it.

    The library's one object for a script or the CLI: ``Office(store, triage)`` and then
    ``office.intake.submit(...)``, ``office.decisions.decide(...)``, ``office.clustering.recluster()``.
    """

    def __init__(self, store: Store, triage: Triage, fast: Triage | None = None, encoder=None,
                 config: OfficeConfig | None = None) -> None:
        from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder
        from triage.store.database import home_dir

        if encoder is None:
            inner = triage.encoder.inner if triage.encoder is not None else get_encoder()
            encoder = CachedEncoder(inner, EmbeddingCache(home_dir() / "embeddings.sqlite"))
        # intake embeds without a cache: the vectors go into the store with the message, and a
        # per-worker cache of every message ever seen would only grow
        raw = encoder.inner if isinstance(encoder, CachedEncoder) else encoder
        self.state = OfficeState(store, triage, fast or triage, config or OfficeConfig(), encoder, raw)
        self.index = TopicIndexKeeper(self.state)
        self.figures = TopicFigures(self.state)
        self.reclustering = Reclustering(self.state, self.index)
        self.clustering = ClusteringCoordinator(self.state, self.reclustering)
        self.intake = IntakeDesk(self.state, self.index, self.figures, self.clustering)
        self.views = Views(self.state)
        self.decisions = Decisions(self.state, self.index)
        self.history = History(self.state, self.intake, self.clustering)

    store = property(lambda self: self.state.store)
    config = property(lambda self: self.state.config)
    encoder = property(lambda self: self.state.encoder)

    @property
    def triage(self) -> Triage:
        """The model of intake and re-clustering; set to a retrained one, every service reads it (shared state)."""
        return self.state.triage

    @triage.setter
    def triage(self, model: Triage) -> None:
        self.state.triage = model

    @property
    def fast(self) -> Triage:
        return self.state.fast

    @fast.setter
    def fast(self, model: Triage) -> None:
        self.state.fast = model

    def warm(self) -> None:
        """Load what a first request would (see :meth:`IntakeDesk.warm`)."""
        self.intake.warm()

    def close(self) -> None:
        """Stop this worker's pending settle run (a re-clustering already running finishes)."""
        self.clustering.close()
