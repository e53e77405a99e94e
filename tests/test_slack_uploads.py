"""The Slack double's file upload flow is as strict as Slack's: files.getUploadURLExternal,
the bytes to the upload URL, files.completeUploadExternal into one thread, once."""

from __future__ import annotations

import time

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from devkit.slack_double import ALL_SCOPES, SlackDouble
from registry.adapters.slack import SlackNotifier
from registry.ports.evidence import UploadRefused

TOKEN = "xoxb-uploads"
PICTURE = b"\x89PNG\r\n\x1a\n" + b"p" * 100


@pytest.fixture
def double():
    with SlackDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def client(double) -> WebClient:
    return WebClient(token=TOKEN, base_url=double.api_url)


def notice(client: WebClient) -> str:
    return str(client.chat_postMessage(channel="C1", text="notice")["ts"])


def error_of(call) -> str:
    with pytest.raises(SlackApiError) as caught:
        call()
    return str(caught.value.response["error"])


def upload(client: WebClient, data: bytes = PICTURE, *, length: int | None = None) -> str:
    got = client.files_getUploadURLExternal(filename="cm.png", length=length or len(data))
    assert requests.post(got["upload_url"], data=data, timeout=5).status_code == 200
    return str(got["file_id"])


def test_an_upload_is_shared_once_into_the_thread_and_served(double, client):
    ts = notice(client)
    file_id = upload(client)
    done = client.files_completeUploadExternal(
        files=[{"id": file_id, "title": "Confusion matrix"}], channel_id="C1", thread_ts=ts
    )
    assert done["files"] == [{"id": file_id, "title": "Confusion matrix"}]
    [shared] = double.files()
    assert (shared["thread_ts"], shared["channel"], shared["data"]) == (ts, "C1", PICTURE)
    [reply] = double.messages("C1")[0]["replies"]
    [listed] = reply["files"]
    assert (listed["id"], listed["mimetype"], listed["title"]) == (
        file_id,
        "image/png",
        "Confusion matrix",
    )
    assert requests.get(listed["url_private"], timeout=5).content == PICTURE
    replies = client.conversations_replies(channel="C1", ts=ts)["messages"]
    assert replies[1]["files"][0]["id"] == file_id
    # Completing it again: the upload is used up.
    again = lambda: client.files_completeUploadExternal(  # noqa: E731
        files=[{"id": file_id}], channel_id="C1", thread_ts=ts
    )
    assert error_of(again) == "file_not_found"
    assert len(double.files()) == 1


def test_unknown_or_never_uploaded_files_are_not_found(client):
    ts = notice(client)
    unknown = lambda: client.files_completeUploadExternal(  # noqa: E731
        files=[{"id": "F0000009999"}], channel_id="C1", thread_ts=ts
    )
    assert error_of(unknown) == "file_not_found"
    got = client.files_getUploadURLExternal(filename="cm.png", length=10)
    unsent = lambda: client.files_completeUploadExternal(  # noqa: E731
        files=[{"id": got["file_id"]}], channel_id="C1", thread_ts=ts
    )
    assert error_of(unsent) == "file_not_found"


def test_the_bytes_must_be_the_length_announced_and_sent_once(double, client):
    got = client.files_getUploadURLExternal(filename="cm.png", length=len(PICTURE) + 1)
    resp = requests.post(got["upload_url"], data=PICTURE, timeout=5)
    assert resp.status_code == 400 and "length_mismatch" in resp.text
    got = client.files_getUploadURLExternal(filename="cm.png", length=len(PICTURE))
    assert requests.post(got["upload_url"], data=PICTURE, timeout=5).status_code == 200
    assert requests.post(got["upload_url"], data=PICTURE, timeout=5).status_code == 400
    forged = got["upload_url"].rsplit("/", 1)[0] + "/forged"
    assert requests.post(forged, data=PICTURE, timeout=5).status_code == 404
    assert requests.get(got["upload_url"], timeout=5).status_code == 405


def test_an_upload_url_expires(double, client):
    double.uploads.ttl = 0.2
    got = client.files_getUploadURLExternal(filename="cm.png", length=len(PICTURE))
    time.sleep(0.3)
    assert requests.post(got["upload_url"], data=PICTURE, timeout=5).status_code == 410
    late = lambda: client.files_completeUploadExternal(  # noqa: E731
        files=[{"id": got["file_id"]}], channel_id="C1"
    )
    assert error_of(late) == "file_not_found"


@pytest.mark.slack_refuses("invalid_arguments")
def test_size_length_and_arguments_are_checked(double, client):
    double.uploads.limit = 50
    big = lambda: client.files_getUploadURLExternal(filename="cm.png", length=51)  # noqa: E731
    assert error_of(big) == "file_upload_size_restricted"
    empty = lambda: client.files_getUploadURLExternal(filename="cm.png", length=0)  # noqa: E731
    assert error_of(empty) == "missing_argument"
    unnamed = lambda: client.files_getUploadURLExternal(filename="", length=5)  # noqa: E731
    assert error_of(unnamed) == "invalid_arguments"


@pytest.mark.slack_refuses("invalid_arguments")
def test_the_thread_must_be_a_top_message_in_a_channel_the_bot_is_in(double, client):
    ts = notice(client)
    reply_ts = client.chat_postMessage(channel="C1", thread_ts=ts, text="reply")["ts"]
    file_id = upload(client)

    def complete(**kw):
        return lambda: client.files_completeUploadExternal(files=[{"id": file_id}], **kw)

    assert error_of(complete(channel_id="C1", thread_ts=reply_ts)) == "invalid_thread_ts"
    assert error_of(complete(channel_id="C1", thread_ts="1.000001")) == "invalid_thread_ts"
    assert error_of(complete(thread_ts=ts)) == "invalid_arguments"
    double.leave("C1")
    assert error_of(complete(channel_id="C1", thread_ts=ts)) == "not_in_channel"
    double.join("C1")
    client.files_completeUploadExternal(files=[{"id": file_id}], channel_id="C1", thread_ts=ts)


def test_without_files_write_every_step_is_refused(double, client):
    double.scopes = set(ALL_SCOPES) - {"files:write"}
    resp = error_of(lambda: client.files_getUploadURLExternal(filename="cm.png", length=5))
    assert resp == "missing_scope"
    notifier = SlackNotifier(client, "C1")
    with pytest.raises(UploadRefused, match="missing_scope"):
        notifier.start_upload("cm.png", PICTURE)


def test_the_notifier_uploads_and_finds_its_upload_in_the_thread(double, client):
    notifier = SlackNotifier(client, "C1")
    ts = notice(client)
    file_id = notifier.start_upload("cm.png", PICTURE)
    assert not notifier.shared_in_thread(file_id, channel="C1", thread_ts=ts)
    notifier.share_upload(file_id, "cm", channel="C1", thread_ts=ts)
    assert notifier.shared_in_thread(file_id, channel="C1", thread_ts=ts)
    with pytest.raises(UploadRefused, match="file_not_found"):
        notifier.share_upload(file_id, "cm", channel="C1", thread_ts=ts)
