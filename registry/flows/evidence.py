"""The evidence in a notice's thread (SPEC 15): schema and dependency changes against
Production, the run's pictures and the metric trend, after the notice and never in its way.

Resumable: the reply is told once (its nonce tagged before posting), each upload's file ID
is tagged before it is shared and marked shared after, so a rerun finds what a run that
died had done and uploads nothing twice; `registry_bot.evidence` says all is done.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from registry.flows.notice import tell_once
from registry.ports.evidence import (
    ChannelBusy,
    EvidenceSource,
    ModelFiles,
    UploadRefused,
    Uploads,
)
from registry.ports.services import Services
from registry.rules.evidence import (
    IMAGE_KINDS,
    MAX_IMAGE_BYTES,
    TREND_VERSIONS,
    Artifact,
    Unreadable,
    diff_requirements,
    diff_schema,
    image_kind,
    parse_requirements,
    parse_signature,
    pick_images,
    trend_metrics,
)
from registry.rules.policy import Evidence
from registry.rules.record import prefixed
from registry.rules.versions import ModelVersion
from registry.views.evidence import (
    NO_REQUIREMENTS,
    NO_SIGNATURE,
    EvidenceFacts,
    chart_title,
    evidence_text,
    problems_text,
)

log = logging.getLogger(__name__)

DONE_KEY = "evidence"  # registry_bot.evidence = "done": the thread shows it all
REPLY_KEY = "evidence"  # tell_once's key for the reply
FAILED_KEY = "evidence_failed"  # ...and for the line naming the uploads Slack refused
FILE_KEY = "evidence_file_"  # + a digest of the file's title: "sharing F…", then "shared F…"
CHART_FILE = "metric-trend.png"


@dataclass(frozen=True)
class Upload:
    """A picture to put in the thread: its file name, its title, its bytes."""

    filename: str
    title: str
    data: bytes = field(repr=False)

    @property
    def key(self) -> str:
        """Return the version tag (unprefixed) that records this upload."""
        return FILE_KEY + hashlib.sha256(self.title.encode()).hexdigest()[:12]


def post_evidence(svc: Services, name: str, version: str, *, patient: bool = True) -> str:
    """Show the version's evidence in its notice's thread, once; return what happened.

    While `patient`, a channel where Slack is slowing top-level posts down is waited out
    (ChannelBusy): the caller stops being patient after a while, so it is never starved.
    """
    mv = svc.gateway.get_version(name, version)
    rule = svc.settings.policy.for_model(name).evidence
    source, uploads = svc.evidence, svc.uploads
    if rule is None or source is None or uploads is None:
        return "off"
    channel, ts = mv.tag("notice_channel"), mv.tag("notice_ts")
    if not (channel and ts):
        return "no_notice"
    if mv.tag(DONE_KEY) == "done":
        return "already_shown"
    if patient and uploads.busy(channel):  # a burst: the notices queued share the pace
        raise ChannelBusy(channel)
    try:
        facts, files = gather(svc, source, mv, rule)
    except (ValueError, KeyError, TypeError) as exc:  # data no rule foresaw: said, not raised
        log.warning("evidence unreadable: %s", exc, extra={"model": name, "version": version})
        problem = f"the evidence could not be read ({type(exc).__name__}: {exc})"[:300]
        facts, files = EvidenceFacts(name, version, problems=(problem,)), []
    tell_once(svc, mv, REPLY_KEY, evidence_text(facts), channel=channel, thread_ts=ts)
    refused = [p for f in files if (p := upload_once(svc, uploads, mv, f, channel, ts))]
    if refused:
        text = problems_text(name, version, refused)
        tell_once(svc, mv, FAILED_KEY, text, channel=channel, thread_ts=ts)
    svc.gateway.set_tags(name, version, prefixed({DONE_KEY: "done"}))
    log.info("evidence shown", extra={"model": name, "version": version, "files": len(files)})
    return "shown"


def upload_once(
    svc: Services, uploads: Uploads, mv: ModelVersion, file: Upload, channel: str, ts: str
) -> str:
    """Upload `file` into the thread unless a run already did; return why Slack refused it,
    or '' once it is there."""
    where = {"channel": channel, "thread_ts": ts}
    state, _, file_id = mv.tag(file.key).partition(" ")
    if state == "shared":
        return ""
    if state == "sharing" and uploads.shared_in_thread(file_id, **where):
        svc.gateway.set_tags(mv.name, mv.version, prefixed({file.key: f"shared {file_id}"}))
        return ""
    try:
        file_id = uploads.start_upload(file.filename, file.data)
        svc.gateway.set_tags(mv.name, mv.version, prefixed({file.key: f"sharing {file_id}"}))
        uploads.share_upload(file_id, file.title, **where)
    except UploadRefused as exc:
        log.warning("upload refused: %s", exc, extra={"model": mv.name, "version": mv.version})
        return f"`{file.title}` could not be uploaded: Slack answered {exc}."
    svc.gateway.set_tags(mv.name, mv.version, prefixed({file.key: f"shared {file_id}"}))
    return ""


def gather(
    svc: Services, source: EvidenceSource, mv: ModelVersion, rule: Evidence
) -> tuple[EvidenceFacts, list[Upload]]:
    """Read what the reply says and what follows it: nothing here posts anything."""
    serving = svc.gateway.production(mv.name)
    prod = serving if serving and serving.version != mv.version else None
    facts = model_facts(source, mv, prod)
    pictures, missing, problems = picture_files(source, mv, rule.images)
    chart, chart_problems = trend_chart(svc, source, mv, serving) if rule.chart else (None, [])
    facts = replace(
        facts,
        missing=(*facts.missing, *missing),
        problems=(*facts.problems, *problems, *chart_problems),
        pictures=tuple(p.title for p in pictures),
        chart=chart is not None,
        url=_version_url(svc, mv),
    )
    return facts, [*pictures, *([chart] if chart else [])]


def model_facts(
    source: EvidenceSource, mv: ModelVersion, prod: ModelVersion | None
) -> EvidenceFacts:
    """Compare the version's signature and requirements with Production's."""
    mine = source.model_files(mv)
    theirs = source.model_files(prod) if prod else ModelFiles()
    against = f"Production v{prod.version}" if prod else ""
    facts = EvidenceFacts(mv.name, mv.version, production_version=prod.version if prod else "")
    if mine.problem:
        facts = replace(facts, problems=(mine.problem,))
    facts = _schema(facts, mine, theirs, against)
    if mine.requirements is None:
        return replace(facts, missing=(*facts.missing, NO_REQUIREMENTS))
    if not against:
        return replace(facts, requirements_note="no Production to compare with")
    if theirs.requirements is None:
        return replace(facts, requirements_note=f"{against} logged no requirements.txt")
    diff = diff_requirements(
        parse_requirements(mine.requirements), parse_requirements(theirs.requirements)
    )
    return replace(facts, requirements=diff)


def _schema(
    facts: EvidenceFacts, mine: ModelFiles, theirs: ModelFiles, against: str
) -> EvidenceFacts:
    """Add the signature's comparison to `facts`: a diff, a note, or what is missing."""
    try:
        signature = parse_signature(mine.mlmodel) if mine.mlmodel is not None else None
        if signature is None:
            return replace(facts, missing=(*facts.missing, NO_SIGNATURE))
        if not against:
            note = f"{len(signature.inputs)} inputs; no Production to compare with"
            return replace(facts, schema_note=note)
        base = parse_signature(theirs.mlmodel) if theirs.mlmodel is not None else None
    except Unreadable as exc:
        return replace(facts, problems=(*facts.problems, f"signature unreadable: {exc}"))
    if base is None:
        return replace(facts, schema_note=f"{against} logged no signature to compare with")
    return replace(facts, schema=diff_schema(signature, base))


def picture_files(
    source: EvidenceSource, mv: ModelVersion, patterns: tuple[str, ...]
) -> tuple[list[Upload], list[str], list[str]]:
    """Read the run's pictures the globs name: (pictures, what is missing, a line for each
    picture that is not shown and why)."""
    if not patterns:
        return [], [], []
    try:
        listed = source.run_artifacts(mv.run_id) if mv.run_id else []
    except Unreadable as exc:
        return [], [], [f"the run's pictures could not be listed: {exc}"]
    shown, left = pick_images(listed, patterns)
    if not shown:
        return [], [f"no pictures matching {', '.join(patterns)}"], []
    problems = (
        [f"{len(left)} more pictures match; the first {len(shown)} are shown"] if left else []
    )
    files = []
    for artifact in shown:
        picture, problem = _picture(source, mv.run_id, artifact)
        if picture:
            files.append(picture)
        else:
            problems.append(problem)
    return files, [], problems


def _picture(source: EvidenceSource, run_id: str, artifact: Artifact) -> tuple[Upload | None, str]:
    name = artifact.path
    if artifact.size > MAX_IMAGE_BYTES:
        mb = MAX_IMAGE_BYTES // (1024 * 1024)
        return None, f"`{name}` is {artifact.size / 1024 / 1024:.1f} MB, over the {mb} MB limit"
    try:
        data = source.read_artifact(run_id, name, MAX_IMAGE_BYTES)
    except Unreadable as exc:
        return None, f"`{name}` not shown: {exc}"
    kind = image_kind(data[:8])
    if kind not in IMAGE_KINDS:
        return None, f"`{name}` is not a PNG or JPEG picture"
    return Upload(name.rsplit("/", 1)[-1], name, data), ""


def trend_chart(
    svc: Services, source: EvidenceSource, mv: ModelVersion, prod: ModelVersion | None
) -> tuple[Upload | None, list[str]]:
    """Draw the model's gated (or first three) metrics over its last ten versions."""
    try:
        points = source.trend(mv.name, TREND_VERSIONS)
    except Unreadable as exc:
        return None, [f"the metric trend could not be read: {exc}"]
    if prod:
        points = [replace(p, production=p.version == prod.version) for p in points]
    gated = [g.metric for g in svc.settings.policy.for_model(mv.name).gates]
    metrics = trend_metrics(gated, points)
    if not metrics:
        return None, ["no metrics to chart"]
    try:
        data = source.chart(chart_title(mv.name), metrics, points)
    except Exception as exc:  # a chart is worth a line, never the task
        log.warning("trend chart not drawn: %s", exc, extra={"model": mv.name})
        return None, [f"the metric trend could not be drawn ({type(exc).__name__})"]
    title = f"{mv.name}: {', '.join(metrics)} over the last {len(points)} versions"
    return Upload(CHART_FILE, title, data), []


def _version_url(svc: Services, mv: ModelVersion) -> str:
    ui = svc.settings.ui_url
    return f"{ui}/#/models/{quote(mv.name, safe='')}/versions/{mv.version}" if ui else ""
