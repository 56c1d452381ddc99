"""What a chat message says, and how each kind of receiver's format writes it.

:mod:`backend.notify` delivers the outbox; this module words each announced event
(:func:`gather` reads what it needs from the log, :func:`message` words it) and shapes it
for Slack, Mattermost, Discord, Teams or a generic webhook (:func:`payload`).

**Formats.** slack and mattermost: incoming webhooks, ``{"text": ...}``; discord:
``{"content": ..., "allowed_mentions": {"parse": []}}`` (at most 2,000 characters); teams: a
Workflows webhook carrying an Adaptive Card; webhook: the event's fields as JSON, signed with
HMAC-SHA256 when ``secret_env`` is set (``X-Andon-Signature: t=<unix time>,v1=<hex of
HMAC(secret, "<t>.<body>")>``, see the README). Text from outside (names, reasons, commit
subjects, environment and repository names) was cleaned of control characters and escape
sequences when it was read from the log, and is escaped here for each format so that no
message can mention anyone (``@everyone``, ``@here``, ``@channel``, ``<!channel>``, ``<@123>``),
carry a link with a disguise (``[x](http://evil)``, ``<http://evil|x>``) or format itself:
Slack's ``& < >`` escapes and ``"mrkdwn": false``; Mattermost and Discord's markdown escaped
character by character (angle brackets as entities for Mattermost, which turns Slack's
``<!channel>`` syntax into mentions); Teams' text only in ``TextRun`` elements, which take no
markdown; and in every chat format a zero-width space after each ``@``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from backend import AndonError
from backend.models import FAILED, INTERRUPTED, SUCCEEDED, UNHEALTHY, Deploy, from_iso
from backend.store import StoreError
from backend.store.deploys import _TIME
from backend.store.outbox import OutboxItem, detail_of
from backend.text import clean_line, short

if TYPE_CHECKING:
    from backend.store import DeployLog
    from backend.store.line import Rollback


T = TypeVar("T")
DISCORD_LIMIT = 2000  # characters of a Discord message
TEXT_LIMIT = 300  # characters of one value (a reason, a subject, a name) in a message
ZWSP = "\u200b"  # after every @: nothing after it can be read as a mention

TONES = {"stop": "🛑", "good": "✅", "bad": "❌", "warn": "⚠️", "info": "↩️"}
TEAMS_COLORS = {"stop": "Attention", "good": "Good", "bad": "Attention", "warn": "Warning", "info": "Accent"}


# -- what a message says --------------------------------------------------------------


class Announcement(NamedTuple):
    """An outbox row with everything its message names, read from the log."""

    item: OutboxItem
    detail: dict[str, Any]
    deploy: Deploy | None  # the event's deploy (a line stopped automatically: the one that caused it)
    reverted: Deploy | None  # the deploy a rollback reverts
    subject: str  # the subject of the deploy's commit, when the log keeps its range ("" otherwise)
    reverted_subject: str  # the same for the reverted deploy
    rollback: Rollback | None = None  # the rollback a rollback.* event is about (its target, when it has no deploy)

    @property
    def key(self) -> str:
        """The event's idempotency key: the same from every andon, for every receiver, on every try."""
        item = self.item
        seed = "\0".join((str(item.event_id), item.at, item.kind, item.env or "", item.who, item.detail))
        return "andon-" + hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:32]


def gather(log: DeployLog, item: OutboxItem) -> Announcement:
    """Read what ``item``'s message needs: its event's detail, deploy, reverted deploy, subject."""
    detail = detail_of(item)
    deploy = _read(log.get, item.deploy_id if item.deploy_id is not None else detail.get("deploy_id"))
    rollback = _read(log.rollback, detail.get("rollback_id"))
    reverted = _read(log.get, detail.get("reverts", deploy.reverts if deploy else rollback.reverts if rollback else None))
    return Announcement(item, detail, deploy, reverted, _subject(log, deploy), _subject(log, reverted), rollback)


def _read(read: Callable[[int], T], row_id: object) -> T | None:
    """The row ``read`` finds for ``row_id`` (an id from an event's detail: anything), or None."""
    if type(row_id) is not int:
        return None
    try:
        return read(row_id)
    except StoreError:
        return None


def _subject(log: DeployLog, deploy: Deploy | None) -> str:
    """The subject of ``deploy``'s commit if the log keeps its range (no git asked: "" otherwise)."""
    if deploy is None or deploy.damaged:
        return ""
    kept = log.cached_ranges([(deploy.prev_sha, deploy.sha)]).get((deploy.prev_sha, deploy.sha))
    if kept is None:
        return ""
    try:
        commits = json.loads(kept[2])
    except ValueError:
        return ""
    return _text(next((commit.get("subject") for commit in commits
                       if isinstance(commit, dict) and commit.get("sha") == deploy.sha), ""))


class Message(NamedTuple):
    """A message before any format: a tone, a title and labelled facts, all plain text."""

    tone: str  # a key of TONES
    title: str
    facts: tuple[tuple[str, str], ...]

    def plain(self) -> str:
        return "\n".join([f"{TONES[self.tone]} {self.title}", *(f"{label}: {value}" for label, value in self.facts)])


def skip_reason(announcement: Announcement) -> str:
    item = announcement.item
    if not item.kind:
        return f"event {item.event_id} is not in the log"
    return f"a rollback's own deploy {item.kind.removeprefix('deploy.')}: rollback.finished tells it"


def message(announcement: Announcement) -> Message | None:
    """What to say about an announced event; None when there is nothing to say after all."""
    item, detail, deploy = announcement.item, announcement.detail, announcement.deploy
    if not item.kind:
        return None
    env = item.env or "every environment"
    where = f"{env} ({item.repository})" if item.repository else env
    who = item.who or "someone"
    at = when(item.at)
    reason = _text(detail.get("reason"))
    facts: list[tuple[str, str]] = []
    if item.kind == "line.stopped":
        automatic = detail.get("automatic") is True
        facts.append(("Reason", reason or "none given"))
        if deploy is not None:
            facts.append(("Caused by", describe_deploy(deploy, announcement.subject)))
        facts += [("Stopped at", at), ("Until", "someone resumes the line; nothing deploys meanwhile")]
        title = f"Line stopped: {where}, by {who}" + (" (automatically)" if automatic else "")
        return Message("stop", title, tuple(facts))
    if item.kind == "line.resumed":
        facts += [("Reason", reason or "none given"), ("Resumed at", at)]
        return Message("good", f"Line resumed: {where}, by {who}", tuple(facts))
    if item.kind == "rollback.started":
        target = _sha(detail.get("target_sha")) or (deploy.sha if deploy else "")
        reverted = announcement.reverted
        if reverted is not None:
            facts.append(("Reverts", describe_deploy(reverted, announcement.reverted_subject)))
        if deploy is not None and deploy.reason:
            facts.append(("Reason", _text(deploy.reason)))
        elif reason:
            facts.append(("Reason", reason))
        if deploy is not None:
            facts.append(("Rollback", f"deploy #{deploy.id}"))
        facts.append(("Started at", at))
        return Message("info", f"Rolling back {where} to {short(target) or 'the last good deploy'}, by {who}",
                       tuple(facts))
    if item.kind == "rollback.finished":
        status = _text(detail.get("status")) or (deploy.status if deploy else "")
        rollback = announcement.rollback
        target = short(deploy.sha) if deploy else short(rollback.target_sha) if rollback else ""
        to = f" to {target}" if target else ""
        if announcement.reverted is not None:
            facts.append(("Reverts", describe_deploy(announcement.reverted, announcement.reverted_subject)))
        if deploy is not None:
            facts += [("Rollback", f"deploy #{deploy.id} by {_text(deploy.who) or 'someone'}"),
                      ("Started at", when(deploy.started_at))]
        elif rollback is not None:  # it never got to run its action
            facts.append(("Rollback", f"requested by {_text(rollback.who) or 'someone'} at "
                                      f"{when(rollback.requested_at)}"))
        if detail.get("error"):
            facts.append(("Error", _text(detail["error"])))
        facts += [("Finished at", at), ("Line", "still stopped until someone resumes it")]
        if status == SUCCEEDED:
            return Message("good", f"Rolled back {where}{to}", tuple(facts))
        outcome = "was interrupted" if status == INTERRUPTED else "failed" if status == FAILED else status or "ended"
        return Message("bad", f"Rollback of {where}{to} {outcome}", tuple(facts))
    if item.kind == "deploy.finished":
        if deploy is not None and deploy.trigger in ("rollback", "auto-rollback"):
            return None
        status = _text(detail.get("status")) or (deploy.status if deploy else "")
        sha = short(deploy.sha) if deploy else "?"
        if deploy is not None:
            facts.append(("Deploy", describe_deploy(deploy, announcement.subject)))
            if deploy.reason:
                facts.append(("Reason", _text(deploy.reason)))
            if deploy.prev_sha:
                facts.append(("Live before", short(deploy.prev_sha)))
            facts.append(("Started at", when(deploy.started_at)))
        if status == FAILED and type(detail.get("exit_code")) is int:
            facts.append(("Exit code", str(detail["exit_code"])))
        facts.append(("Finished at", at))
        if status == SUCCEEDED:  # told only to receivers that want "deploys"
            return Message("good", f"Deployed {sha} to {where}, by {who}", tuple(facts))
        verdict = "unhealthy (its health verification failed)" if status == UNHEALTHY else status or "failed"
        return Message("bad", f"Deploy of {sha} to {where} {verdict}, by {who}", tuple(facts))
    if item.kind == "deploy.forced":
        sha = short(deploy.sha) if deploy else "?"
        facts.append(("Reason", reason or "none given"))
        stopped_by = _text(detail.get("stopped_by"))
        if stopped_by:
            stopped_reason = _text(detail.get("stopped_reason"))
            facts.append(("Line stopped by", stopped_by + (f": {stopped_reason}" if stopped_reason else "")))
        past = ["the stopped line"] if stopped_by else []
        frozen = detail.get("frozen")
        if isinstance(frozen, dict):
            past.append("a freeze")
            opens = _text(frozen.get("opens"))
            facts.append(("Freeze", _text(frozen.get("reason")) + (f" (opens {when(opens)})" if opens else "")))
        held = detail.get("held")
        shas = held.get("shas") if isinstance(held, dict) else None
        unchecked = _text(held.get("error")) if isinstance(held, dict) else ""
        if isinstance(shas, list) and shas:
            past.append("held commits")
            facts.append(("Held commits", ", ".join(short(_sha(sha)) for sha in shas[:15])
                           + (f" and {len(shas) - 15} more" if len(shas) > 15 else "")))
        elif unchecked:  # git could not say which held commits it contains: a forced deploy goes all the same
            past.append("held commits it could not check")
            facts.append(("Held commits", f"not checked: {unchecked}"))
        if deploy is not None:
            facts.append(("Deploy", describe_deploy(deploy, announcement.subject)))
        facts.append(("At", at))
        # Older andons wrote only the stopped line's facts: a forced deploy was one past a stop.
        through = " and ".join(past) if past else "the stopped line"
        return Message("warn", f"Forced deploy of {sha} to {where} past {through}, by {who}", tuple(facts))
    if item.kind == "rollback.held":
        return _held(announcement, where, who, at, reason)
    if item.kind == "migration.reminder":
        return _reminder(announcement)
    if item.kind in NEWS:
        return NEWS[item.kind](announcement, where, who, at)
    # A kind a newer andon announces: said plainly.
    facts += [(_text(key), _text(value)) for key, value in list(detail.items())[:6]]
    return Message("info", f"{_text(item.kind)}: {where}, by {who}", (*facts, ("At", at)))


REMINDER_ITEMS = 15  # migrations named in one reminder digest (the rest are counted)


def _held(announcement: Announcement, where: str, who: str, at: str, reason: str) -> Message:
    """``rollback.held``: a migration's expand is not in the rollback's target; nothing ran."""
    item, detail, deploy = announcement.item, announcement.detail, announcement.deploy
    automatic = detail.get("automatic") is True
    target = short(_sha(detail.get("target_sha"))) or "?"
    holds = [hold for hold in detail.get("holds") or () if isinstance(hold, dict)][:REMINDER_ITEMS]
    facts = [("Migration", f"{_text(hold.get('name'))}: {_text(hold.get('phase'))} here, its expand "
                           f"{short(_sha(hold.get('expand'))) or '?'} is not in {target}") for hold in holds]
    facts.append(("Why held", "the old code cannot read the new shape: nothing was rolled back"))
    if automatic and deploy is not None:
        facts.append(("Caused by", describe_deploy(deploy, announcement.subject)))
    elif reason:
        facts.append(("Reason", reason))
    if automatic:
        facts.append(("Line", "stays stopped until someone resumes it or rolls back"))
    names = " ".join(f"--despite-migration {_text(hold.get('name'))}" for hold in holds)
    facts += [("Roll back anyway", f"andon rollback --env {item.env or 'ENV'} {names}"), ("Held at", at)]
    by = "automatically, after an unhealthy deploy" if automatic else f"requested by {who}"
    return Message("warn", f"Rollback of {where} to {target} held by a migration, {by}", tuple(facts))


def _rollback_unhealthy(announcement: Announcement, where: str, who: str, at: str) -> Message:
    """``rollback.unhealthy``: the rollback ran, health did not come back; no second automatic rollback."""
    item, detail, deploy = announcement.item, announcement.detail, announcement.deploy
    target = short(deploy.sha) if deploy else short(_sha(detail.get("target_sha"))) or "?"
    checks = ", ".join(_text(check) for check in detail.get("checks") or () if isinstance(check, str))
    facts = [("Why", _text(detail.get("why")) or "its health verification failed")]
    if checks:
        facts.append(("Checks down", checks))
    if announcement.reverted is not None:
        facts.append(("Reverted", describe_deploy(announcement.reverted, announcement.reverted_subject)))
    if deploy is not None:
        facts.append(("Rollback", f"deploy #{deploy.id} by {_text(deploy.who) or 'someone'}"))
    env = item.env or "ENV"
    facts += [("Line", "stays stopped: andon does not roll back again by itself in this stop"),
              ("A person decides", f"roll back further (andon rollback --env {env} --to DEPLOY-ID), fix forward, "
                                   "or resume"),
              ("At", at)]
    return Message("bad", f"Rolled back {where} to {target}, still unhealthy: a person decides", tuple(facts))


def _line_reminder(announcement: Announcement, where: str, who: str, at: str) -> Message:
    """``line.reminder``: the line has been stopped for ``minutes`` (once per stop_reminder_minutes)."""
    item, detail = announcement.item, announcement.detail
    minutes = detail.get("minutes")
    long = _duration(minutes) if isinstance(minutes, int | float) and not isinstance(minutes, bool) else "a while"
    facts = [("Stopped by", _text(detail.get("stopped_by")) or "someone"),
             ("Reason", _text(detail.get("reason")) or "none given")]
    stopped_at = detail.get("stopped_at")
    if isinstance(stopped_at, str):
        facts.append(("Stopped at", when(stopped_at)))
    facts += [("Until", f"someone resumes it (andon resume --env {item.env or 'ENV'}); nothing deploys meanwhile"),
              ("Reminded at", at)]
    return Message("warn", f"Line still stopped: {where}, for {long}", tuple(facts))


def _duration(minutes: float) -> str:
    """``125`` as ``2 h 5 min``."""
    whole = max(0, int(minutes))
    return f"{whole // 60} h {whole % 60} min" if whole >= 60 else f"{whole} min"


def _commit_held(announcement: Announcement, where: str, who: str, at: str) -> Message:
    """``commit.held``: a rollback took these commits out; deploys that contain them are refused."""
    item, detail = announcement.item, announcement.detail
    shas = [sha for sha in detail.get("shas") or () if isinstance(sha, str)]
    subjects = [subject if isinstance(subject, str) else "" for subject in detail.get("subjects") or ()]
    facts = [("Held", short(_sha(sha)) + (f" “{_text(subjects[n])}”" if n < len(subjects) and subjects[n] else ""))
             for n, sha in enumerate(shas[:REMINDER_ITEMS])]
    told = detail.get("count")
    count = told if isinstance(told, int) and not isinstance(told, bool) else len(shas)
    if count > len(facts):
        facts.append(("And", f"{count - len(facts)} more"))
    if announcement.reverted is not None:
        facts.append(("Rolled back", describe_deploy(announcement.reverted, announcement.reverted_subject)))
    facts += [("Until", f"each is reverted (git revert) or released (andon release SHA --env {item.env or 'ENV'} "
                        "--reason TEXT)"), ("Held at", at)]
    plural = "s" if count != 1 else ""
    return Message("warn", f"{count} commit{plural} held out of {where} after a rollback", tuple(facts))


def _commit_released(announcement: Announcement, where: str, who: str, at: str) -> Message:
    """``commit.released``: a person let a held commit be deployed again, or (``andon release
    --all``: ``shas``, ``subjects``, ``count``) every commit held there, in one message."""
    detail = announcement.detail
    reason = ("Reason", _text(detail.get("reason")) or "none given")
    shas = [sha for sha in detail.get("shas") or () if isinstance(sha, str)] \
        if isinstance(detail.get("shas"), list) else []
    if not shas:
        sha = short(_sha(detail.get("sha"))) or "?"
        return Message("info", f"Commit {sha} released in {where}, by {who}: it may be deployed again",
                       (reason, ("Released at", at)))
    subjects = [subject if isinstance(subject, str) else "" for subject in detail.get("subjects") or ()] \
        if isinstance(detail.get("subjects"), list) else []
    facts = [("Released", short(_sha(sha)) + (f" “{_text(subjects[n])}”" if n < len(subjects) and subjects[n] else ""))
             for n, sha in enumerate(shas[:REMINDER_ITEMS])]
    told = detail.get("count")
    count = told if isinstance(told, int) and not isinstance(told, bool) and told >= len(shas) else len(shas)
    if count > len(facts):
        facts.append(("And", f"{count - len(facts)} more"))
    facts += [reason, ("Released at", at)]
    if count == 1:
        return Message("info", f"Commit {short(_sha(shas[0]))} released in {where}, by {who}: it may be deployed "
                               "again", tuple(facts))
    return Message("info", f"{count} held commits released in {where}, by {who}: they may be deployed again",
                   tuple(facts))


# Issue 10's kinds: each has its wording (every title names the environment and the repository).
NEWS: dict[str, Callable[[Announcement, str, str, str], Message]] = {
    "rollback.unhealthy": _rollback_unhealthy, "line.reminder": _line_reminder,
    "commit.held": _commit_held, "commit.released": _commit_released,
}


def _reminder(announcement: Announcement) -> Message:
    """``migration.reminder``: the digest of one environment's overdue cleanups (items: name, env,
    severity, due, next). A digest of no environment (an older andon's, of every environment) is
    said as such."""
    item = announcement.item
    items = [entry for entry in announcement.detail.get("items") or () if isinstance(entry, dict)]
    try:
        now = from_iso(item.at)
    except (TypeError, ValueError):
        now = None
    facts = []
    for entry in items[:REMINDER_ITEMS]:
        level = _text(entry.get("severity")) or "overdue"
        due = entry.get("due")
        late = _overdue_for(due, now) if isinstance(due, str) else ""
        what = level + (f", {late}" if late else "") + (f" (due {when(due)[:10]})" if isinstance(due, str) else "")
        step = _text(entry.get("next")) or "ship the contract (or waive or snooze it: andon migration)"
        facts.append((f"{_text(entry.get('name'))} in {_text(entry.get('env'))}", f"{what}; next: {step}"))
    if len(items) > REMINDER_ITEMS:
        facts.append(("And", f"{len(items) - REMINDER_ITEMS} more (andon migrations)"))
    count = len(items)
    tone = "bad" if any(entry.get("severity") == "critical" for entry in items) else "warn"
    env = item.env or "every environment"
    where = f"{env} ({item.repository})" if item.repository else env
    title = f"{count} migration cleanup{'s' if count != 1 else ''} overdue in {where}"
    return Message(tone, title, (*facts, ("Reminded at", when(item.at))))


def _overdue_for(due: str, now: datetime | None) -> str:
    """``3 days overdue`` (``5 hours overdue`` under a day), or "" when it cannot be told."""
    try:
        late = (now - from_iso(due)).total_seconds() if now is not None else -1.0
    except (TypeError, ValueError):
        return ""
    if late < 0:
        return ""
    if late < 86400:
        hours = int(late // 3600)
        return f"{hours} hour{'s' if hours != 1 else ''} overdue"
    days = int(late // 86400)
    return f"{days} day{'s' if days != 1 else ''} overdue"


def describe_deploy(deploy: Deploy, subject: str) -> str:
    """``deploy #12 of 1a2b3c4 “Fix the login page” by alice``."""
    return (f"deploy #{deploy.id} of {short(deploy.sha)}" + (f" “{subject}”" if subject else "")
            + f" by {_text(deploy.who) or 'someone'}")


def looks_like_time(text: str) -> bool:
    return _TIME.match(text) is not None


def when(stamp: str) -> str:
    """A log time as ``2026-11-20 14:03:05 UTC`` (a time andon did not write: as it is, cleaned)."""
    if looks_like_time(stamp):
        return f"{stamp[:10]} {stamp[11:19]} UTC"
    return _text(stamp) or "?"


def _text(value: object) -> str:
    """A value from the log as one clean line of at most TEXT_LIMIT characters."""
    if value is None:
        return ""
    text = " ".join(clean_line(value if isinstance(value, str) else json.dumps(value)).split())
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"


def _sha(value: object) -> str:
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{7,64}", value) else ""


# -- formats --------------------------------------------------------------------------

# Every ASCII punctuation character but < > (handled apart) and @ (no markup): CommonMark
# (Mattermost) and Discord's markdown both read a backslash before any of them as "this
# character, plainly".
_MARKDOWN = re.compile(r"([!-/:;=?\[-`{-~])")


def defuse_mentions(text: str) -> str:
    """A zero-width space after each ``@``: ``@everyone``, ``@here``, ``@channel``, ``@name`` mention nobody."""
    return text.replace("@", "@" + ZWSP)


def slack_escape(text: str) -> str:
    """Slack's three escapes (``& < >``: no ``<!channel>``, ``<@U1>`` or ``<url|text>`` survives), mentions defused."""
    return defuse_mentions(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def markdown_escape(text: str, *, entities: bool) -> str:
    """Markdown shown as written: every punctuation character backslash-escaped, mentions defused.

    ``entities``: angle brackets as ``&lt;``/``&gt;`` (Mattermost, which reads Slack's
    ``<!channel>`` and ``<url|text>`` before its markdown); else backslash-escaped (Discord).
    """
    less, more = ("&lt;", "&gt;") if entities else ("\\<", "\\>")
    return defuse_mentions(_MARKDOWN.sub(r"\\\1", text).replace("<", less).replace(">", more))


def teams_escape(text: str) -> str:
    """Text for a Teams ``TextRun`` (no markdown there): mentions defused, ``{{DATE()}}`` functions broken."""
    return defuse_mentions(text.replace("{{", "{" + ZWSP + "{"))


def slack_payload(said: Message) -> dict[str, Any]:
    return {"text": slack_escape(said.plain()), "mrkdwn": False, "unfurl_links": False, "unfurl_media": False}


def _markdown(said: Message, *, entities: bool) -> str:
    def escape(text: str) -> str:
        return markdown_escape(text, entities=entities)

    lines = [f"{TONES[said.tone]} **{escape(said.title)}**"]
    lines += [f"**{escape(label)}:** {escape(value)}" for label, value in said.facts]
    return "\n".join(lines)


def mattermost_payload(said: Message) -> dict[str, Any]:
    return {"text": _markdown(said, entities=True)}


def discord_payload(said: Message) -> dict[str, Any]:
    content = _markdown(said, entities=False)
    if len(content) > DISCORD_LIMIT:
        cut = content[:DISCORD_LIMIT - 1]
        trailing = len(cut) - len(cut.rstrip("\\"))
        content = cut[:len(cut) - trailing % 2] + "…"  # never end on an escape with nothing to escape
    return {"content": content, "allowed_mentions": {"parse": []}}


def teams_payload(said: Message) -> dict[str, Any]:
    body: list[dict[str, Any]] = [{"type": "RichTextBlock", "inlines": [
        {"type": "TextRun", "text": teams_escape(f"{TONES[said.tone]} {said.title}"), "weight": "Bolder",
         "size": "Medium", "color": TEAMS_COLORS[said.tone]}]}]
    for label, value in said.facts:
        body.append({"type": "RichTextBlock", "inlines": [
            {"type": "TextRun", "text": teams_escape(f"{label}: "), "weight": "Bolder"},
            {"type": "TextRun", "text": teams_escape(value)}]})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "msteams": {"width": "Full"}, "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}


def webhook_payload(announcement: Announcement, said: Message) -> dict[str, Any]:
    """The generic webhook's body: the event's fields, its deploy, the message as text, the key."""
    item, deploy = announcement.item, announcement.deploy
    return {"idempotency_key": announcement.key, "event_id": item.event_id, "kind": item.kind, "env": item.env,
            "who": item.who, "at": item.at, "deploy_id": item.deploy_id, "detail": announcement.detail,
            "repository": item.repository, "deploy": deploy.to_json(output=False) if deploy else None,
            "reverts": announcement.reverted.to_json(output=False) if announcement.reverted else None,
            "title": said.title, "text": said.plain()}


CHAT_PAYLOADS: dict[str, Callable[[Message], dict[str, Any]]] = {
    "slack": slack_payload, "mattermost": mattermost_payload, "discord": discord_payload, "teams": teams_payload,
}


def payload(kind: str, announcement: Announcement, said: Message) -> dict[str, Any]:
    """The JSON a receiver of ``kind`` gets for ``announcement``."""
    if kind == "webhook":
        return webhook_payload(announcement, said)
    try:
        return CHAT_PAYLOADS[kind](said)
    except KeyError:
        raise AndonError(f"unknown kind of receiver {clean_line(kind)!r}") from None
