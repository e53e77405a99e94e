"""A stateful property test of the lifecycle: events, clicks, rollbacks, crashes and restarts."""

from __future__ import annotations

from contextlib import nullcontext

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from registry.flows import lifecycle, operations
from registry.flows.sweep import sweep
from registry.ports.services import Services
from registry.rules.events import TrainingEvent
from registry.rules.governance import rollback_pending
from registry.rules.record import history_of, time_of
from registry.rules.reports import RollbackRefused, plan_rollback
from registry.rules.settings import Settings
from tests.fakes import Crash, FakeDirectory, FakeGateway, RecordingNotifier

MODEL = "churn"
APPROVERS = ["UA", "UB", "UC"]
USERS = [*APPROVERS, "UOUT"]


class Lifecycle(RuleBasedStateMachine):
    """Drive the domain code against a fake registry and check the promises after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.gateway = FakeGateway()
        self.clock = 1_000_000.0
        self.runs_sent: set[str] = set()
        self.notifier = RecordingNotifier()  # Slack, like the registry, outlives our processes
        self.just_swept = False  # whether the last step was a sweep
        self.restart()

    def now(self) -> float:
        self.clock += 1.0
        return self.clock

    @rule()
    def restart(self) -> None:
        """Every process restarts: only the registry survives."""
        settings = Settings(
            mlflow_tracking_uri="fake",
            slack_channel="CNOTICES",
            approvers=tuple(APPROVERS),
            required_approvals=2,
        )
        self.svc = Services(
            gateway=self.gateway,
            notifier=self.notifier,
            settings=settings,
            directory=FakeDirectory(APPROVERS),
            clock=self.now,
        )

    @rule(run=st.integers(0, 5), requester=st.sampled_from(USERS))
    def training_event(self, run: int, requester: str) -> None:
        run_id = f"run{run}"
        self.gateway.add_run(run_id, {"accuracy": 0.8 + run / 100})
        event = TrainingEvent(MODEL, run_id, requested_by=requester)
        lifecycle.stage_training_event(self.svc, event, event_id=f"evt-{run}")
        self.runs_sent.add(run_id)

    @precondition(lambda self: self.gateway.versions(MODEL))
    @rule(data=st.data(), user=st.sampled_from(USERS))
    def approve(self, data, user: str) -> None:
        version = data.draw(st.sampled_from([mv.version for mv in self.gateway.versions(MODEL)]))
        lifecycle.approve(self.svc, MODEL, version, user=user)

    @precondition(lambda self: self.gateway.versions(MODEL))
    @rule(data=st.data(), user=st.sampled_from(USERS), reason=st.text(min_size=1, max_size=20))
    def reject(self, data, user: str, reason: str) -> None:
        version = data.draw(st.sampled_from([mv.version for mv in self.gateway.versions(MODEL)]))
        lifecycle.reject(self.svc, MODEL, version, user=user, reason=reason)

    @precondition(lambda self: self.gateway.production(MODEL))
    @rule(data=st.data(), user=st.sampled_from(APPROVERS))
    def rollback(self, data, user: str) -> None:
        choices = ["", *[mv.version for mv in self.gateway.versions(MODEL)]]
        target = data.draw(st.sampled_from(choices))
        try:
            plan = plan_rollback(self.gateway.versions(MODEL), MODEL, target, "drift")
        except RollbackRefused:
            return
        operations.rollback(self.svc, plan, user=user, channel="CNOTICES", response_url="")

    @precondition(
        lambda self: any(
            mv.stage == "Staging" and not mv.tag("decision") for mv in self.gateway.versions(MODEL)
        )
    )
    @rule(data=st.data())
    def crash_after_deciding(self, data) -> None:
        """A worker records an approval decision and dies before promoting."""
        staged = [
            mv
            for mv in self.gateway.versions(MODEL)
            if mv.stage == "Staging" and not mv.tag("decision")
        ]
        mv = data.draw(st.sampled_from(staged))
        current = self.gateway.production(MODEL)
        self.gateway.set_tags(
            MODEL,
            mv.version,
            {
                "registry_bot.decision": "approved",
                "registry_bot.decided_by": "UA,UB",
                # The form earlier releases wrote: a resumed decision reads it all the same.
                "registry_bot.decided_at": f"{self.now():.3f}",
                "registry_bot.approvals": "UA,UB",
                "registry_bot.replaces": current.version if current else "",
            },
        )
        self.just_swept = False

    @precondition(lambda self: self.gateway.versions(MODEL))
    @rule(
        data=st.data(),
        change=st.sampled_from(["approve", "reject", "rollback"]),
        writes=st.integers(1, 8),
    )
    def crash_mid_change(self, data, change: str, writes: int) -> None:
        """A worker dies after its `writes`-th registry write of a change; nothing else runs."""
        left = [writes]

        def dies(op, version, arg) -> bool:
            left[0] -= 1
            return left[0] == 0

        self.gateway.die_after = dies
        try:
            if change == "rollback":
                self.rollback(data, user="UA")
            elif change == "approve":
                self.approve(data, user="UA")
            else:
                self.reject(data, user="UB", reason="drift")
        except Crash:
            pass
        finally:
            self.gateway.die_after = None
        self.just_swept = False

    @rule()
    def sweep(self) -> None:
        sweep(self.svc, lambda name: nullcontext(), [MODEL])
        self.just_swept = True

    @invariant()
    def a_sweep_leaves_nothing_half_done(self) -> None:
        if not self.just_swept:
            return
        for mv in self.gateway.versions(MODEL):
            assert not rollback_pending(mv), mv
            assert not (mv.tag("decision") and not mv.tag("announced")), mv

    @invariant()
    def at_most_one_production(self) -> None:
        assert len([mv for mv in self.gateway.versions(MODEL) if mv.stage == "Production"]) <= 1

    @invariant()
    def one_version_per_accepted_event(self) -> None:
        versions = self.gateway.versions(MODEL)
        assert sorted(mv.run_id for mv in versions) == sorted(self.runs_sent)
        noticed = [mv.tag("notice_ts") for mv in versions if mv.tag("notice_ts")]
        assert len(noticed) == len(versions)  # one notice per version...
        notices = [text for text, meta in self.notifier.posts if "registry_bot_notice" in meta]
        assert len(notices) == len(set(noticed)) == len(versions)  # ...and never a second

    @invariant()
    def every_decision_says_who_and_when(self) -> None:
        for mv in self.gateway.versions(MODEL):
            if mv.tag("decision"):
                assert mv.tag("decided_at")
                assert mv.tag("decided_by") or mv.tag("decision") == "expired"
            for entry in history_of(mv):
                assert entry["at"] and ("actor" in entry)
            half_done = (mv.tag("decision") and not mv.tag("announced")) or rollback_pending(mv)
            if mv.stage == "Production" and not half_done:  # a crash may leave it mid-way
                assert mv.tag("production_since")

    def in_flight(self) -> bool:
        """Say whether a change was left half done by a crash (the sweep finishes it)."""
        return any(
            (mv.tag("decision") and not mv.tag("announced")) or rollback_pending(mv)
            for mv in self.gateway.versions(MODEL)
        )

    @invariant()
    def no_tag_describes_a_state_the_version_has_left(self) -> None:
        if self.in_flight():  # a change a crash left mid-way may not have dropped them yet
            return
        for mv in self.gateway.versions(MODEL):
            if mv.stage == "Production":
                assert not (mv.tag("production_until") or mv.tag("archived_at")), mv.tags
            if mv.stage == "Archived" and mv.tag("production_since"):
                left, since = time_of(mv, "production_until"), time_of(mv, "production_since")
                assert left is not None and since is not None and left >= since, mv.tags

    @invariant()
    def every_decided_notice_says_where_its_version_is_now(self) -> None:
        if self.in_flight():  # the change a crash left mid-way redraws them when finished
            return
        shown = dict(self.notifier.updates)  # the last update of each notice
        for mv in self.gateway.versions(MODEL):
            if mv.tag("decision") and mv.tag("announced"):
                headline = shown[mv.tag("notice_ts")]
                expected = "production" if mv.stage == "Production" else "archived"
                if mv.tag("decision") != "approved":
                    expected = {"rejected": "rejected", "expired": "expired"}[mv.tag("decision")]
                    expected = "withdrawn" if "withdrawn" in headline else expected
                assert expected in headline, (mv.version, mv.stage, headline)


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=300, stateful_step_count=30, deadline=None)
