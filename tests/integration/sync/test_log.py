"""Documents and the update log over REST: ownership, order, idempotency, limits."""

from __future__ import annotations

import asyncio
import base64
import uuid

import httpx
import msgspec
import pytest

from server.app import create_app
from server.db.engine import create_engine
from server.db.models import DocUpdate
from server.sync import repository as repo
from tests.conftest import app_client
from tests.helpers import assert_problem, b64, bearer, count_rows, new_doc, sign_in, updates


async def test_documents_are_created_listed_and_deleted(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    listed = (await client.get("/v1/docs", headers=bearer(me))).json()["docs"]
    assert [d["doc_id"] for d in listed] == [doc]
    assert listed[0]["kind"] == "canvas" and listed[0]["head"] == 0
    assert (await client.delete(f"/v1/docs/{doc}", headers=bearer(me))).status_code == 204
    assert_problem(await client.get(f"/v1/docs/{doc}", headers=bearer(me)), 404, "not-found")


async def test_a_client_chosen_id_is_idempotent(client, smtp):
    me, other = await sign_in(client, smtp), await sign_in(client, smtp)
    doc_id = str(uuid.uuid4())
    for _ in range(2):
        r = await client.post(
            "/v1/docs", json={"kind": "canvas", "doc_id": doc_id}, headers=bearer(me)
        )
        assert r.status_code == 201 and r.json()["doc_id"] == doc_id
    r = await client.post(
        "/v1/docs", json={"kind": "canvas", "doc_id": doc_id}, headers=bearer(other)
    )
    assert_problem(r, 409, "conflict")


async def test_appends_get_gapless_seqs_in_order(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    r = await client.post(
        f"/v1/docs/{doc}/updates", json=updates(b"a", b"b", b"c"), headers=bearer(me)
    )
    assert r.status_code == 200
    assert r.json()["seqs"] == [1, 2, 3] and r.json()["head"] == 3
    r = await client.post(
        f"/v1/docs/{doc}/updates", json=updates(b"d", prefix="v"), headers=bearer(me)
    )
    assert r.json()["seqs"] == [4]
    page = (await client.get(f"/v1/docs/{doc}/updates?after=1", headers=bearer(me))).json()
    assert [u["seq"] for u in page["updates"]] == [2, 3, 4]
    assert [base64.b64decode(u["ciphertext"]) for u in page["updates"]] == [b"b", b"c", b"d"]
    assert page["head"] == 4 and page["has_more"] is False and page["snapshot"] is None
    assert page["updates"][0]["device_id"] == me["device_id"]
    r = await client.get(f"/v1/docs/{doc}/updates?after=0&limit=2", headers=bearer(me))
    page = r.json()
    assert [u["seq"] for u in page["updates"]] == [1, 2] and page["has_more"] is True
    assert r.headers["link"] == f'</v1/docs/{doc}/updates?after=2&limit=2>; rel="next"'
    # Following the links reaches the head; the last page has none.
    r = await client.get(r.links["next"]["url"], headers=bearer(me))
    assert [u["seq"] for u in r.json()["updates"]] == [3, 4] and r.json()["has_more"] is False
    assert "link" not in r.headers


async def test_a_repeated_client_update_id_stores_nothing(client, smtp, settings):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    first = await client.post(
        f"/v1/docs/{doc}/updates", json=updates(b"a", b"b"), headers=bearer(me)
    )
    again = await client.post(
        f"/v1/docs/{doc}/updates", json=updates(b"a", b"b", b"c"), headers=bearer(me)
    )
    assert first.json()["seqs"] == [1, 2]
    assert again.json()["seqs"] == [1, 2, 3]
    assert await count_rows(settings, DocUpdate) == 3


async def test_twenty_concurrent_writers_get_unique_gapless_seqs(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)

    async def writer(n: int) -> list[int]:
        seqs = []
        for k in range(5):
            r = await client.post(
                f"/v1/docs/{doc}/updates",
                json=updates(f"{n}:{k}".encode(), prefix=f"w{n}-{k}-"),
                headers=bearer(me),
            )
            assert r.status_code == 200, r.text
            seqs += r.json()["seqs"]
        return seqs

    results = await asyncio.gather(*(writer(n) for n in range(20)))
    every = sorted(s for seqs in results for s in seqs)
    assert every == list(range(1, 101))
    for seqs in results:
        assert seqs == sorted(seqs)  # each writer's own updates in its order
    page = (await client.get(f"/v1/docs/{doc}/updates?limit=1000", headers=bearer(me))).json()
    assert [u["seq"] for u in page["updates"]] == list(range(1, 101))


async def test_two_replicas_writing_one_document_get_gapless_seqs(make_settings, smtp):
    """Each replica commits on its own; the seqs follow the head found under the lock,
    whoever wrote last."""
    settings = make_settings()
    async with (
        app_client(create_app(settings)) as one,
        app_client(create_app(settings)) as two,
    ):
        me = await sign_in(one, smtp)
        doc = await new_doc(one, me)

        async def writer(client: httpx.AsyncClient, n: int) -> list[int]:
            seqs = []
            for k in range(10):
                r = await client.post(
                    f"/v1/docs/{doc}/updates",
                    json=updates(b"x", prefix=f"w{n}-{k}-"),
                    headers=bearer(me),
                )
                assert r.status_code == 200, r.text
                seqs += r.json()["seqs"]
            return seqs

        results = await asyncio.gather(*(writer((one, two)[n % 2], n) for n in range(6)))
        assert sorted(s for seqs in results for s in seqs) == list(range(1, 61))
        page = (await two.get(f"/v1/docs/{doc}/updates?limit=100", headers=bearer(me))).json()
        assert [u["seq"] for u in page["updates"]] == list(range(1, 61)) and page["head"] == 60


async def test_a_deleted_document_refuses_pushes_and_stores_nothing(client, smtp, settings):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    url = f"/v1/docs/{doc}/updates"
    assert (await client.post(url, json=updates(b"a"), headers=bearer(me))).status_code == 200
    assert (await client.delete(f"/v1/docs/{doc}", headers=bearer(me))).status_code == 204
    r = await client.post(url, json=updates(b"b", prefix="later"), headers=bearer(me))
    assert_problem(r, 404, "not-found")
    assert await count_rows(settings, DocUpdate) == 0


@pytest.mark.backend("postgres")
async def test_a_known_documents_groups_commit_in_one_statement(make_settings, smtp, monkeypatch):
    """The first group of a document is a transaction (it learns the owner and kind); the
    next ones are one statement each, unless one has to run again under the locks."""
    app = create_app(make_settings(storage_quota=1024))
    transactions: list[bool] = []
    appender = type(app.state.sync.appender)
    full = appender._transaction

    async def counted(self, group, dedupe):  # type: ignore[no-untyped-def]
        transactions.append(dedupe)
        return await full(self, group, dedupe)

    monkeypatch.setattr(appender, "_transaction", counted)
    async with app_client(app) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        url = f"/v1/docs/{doc}/updates"
        for n in range(3):
            r = await client.post(url, json=updates(b"x", prefix=f"{n}-"), headers=bearer(me))
            assert r.json()["seqs"] == [n + 1]
        assert transactions == [False]
        r = await client.post(url, json=updates(b"x", b"y", prefix="1-"), headers=bearer(me))
        assert r.json()["seqs"] == [2, 4]  # one sent again: the group ran again, looking up
        assert transactions == [False, True]
        r = await client.post(url, json=updates(b"z" * 1021, prefix="big"), headers=bearer(me))
        assert_problem(r, 413, "quota-exceeded")  # the statement checked the quota
        assert transactions == [False, True, True]
        page = (await client.get(f"{url}?after=0", headers=bearer(me))).json()
        assert [u["seq"] for u in page["updates"]] == [1, 2, 3, 4] and page["head"] == 4


async def test_msgpack_catch_up_is_smaller_and_equal(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    payloads = [bytes([n]) * 300 for n in range(20)]
    await client.post(f"/v1/docs/{doc}/updates", json=updates(*payloads), headers=bearer(me))
    as_json = await client.get(f"/v1/docs/{doc}/updates", headers=bearer(me))
    packed = await client.get(
        f"/v1/docs/{doc}/updates", headers=bearer(me) | {"Accept": "application/msgpack"}
    )
    assert packed.headers["content-type"].startswith("application/msgpack")
    decoded = msgspec.msgpack.decode(packed.content)
    assert [u["ciphertext"] for u in decoded["updates"]] == payloads
    assert len(packed.content) < 0.8 * len(as_json.content)


async def test_msgpack_push_is_accepted(client, smtp):
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    body = msgspec.msgpack.encode(
        {"updates": [{"client_update_id": "m1", "key_version": 1, "ciphertext": b"\x00\xff"}]}
    )
    r = await client.post(
        f"/v1/docs/{doc}/updates",
        content=body,
        headers=bearer(me) | {"Content-Type": "application/msgpack"},
    )
    assert r.status_code == 200 and r.json()["seqs"] == [1]


async def test_another_users_documents_answer_404(client, smtp):
    alice, bob = await sign_in(client, smtp), await sign_in(client, smtp)
    doc = await new_doc(client, alice)
    await client.post(f"/v1/docs/{doc}/updates", json=updates(b"secret"), headers=bearer(alice))
    for method, path, body in [
        ("GET", f"/v1/docs/{doc}", None),
        ("DELETE", f"/v1/docs/{doc}", None),
        ("GET", f"/v1/docs/{doc}/updates", None),
        ("POST", f"/v1/docs/{doc}/updates", updates(b"x", prefix="evil")),
        ("GET", f"/v1/docs/{doc}/snapshot", None),
        (
            "PUT",
            f"/v1/docs/{doc}/snapshot",
            {"upto_seq": 1, "key_version": 1, "ciphertext": b64(b"s")},
        ),
        ("GET", f"/v1/docs/{uuid.uuid4()}", None),
    ]:
        r = await client.request(method, path, json=body, headers=bearer(bob))
        assert_problem(r, 404, "not-found")
    assert [
        d["doc_id"] for d in (await client.get("/v1/docs", headers=bearer(bob))).json()["docs"]
    ] == []
    page = (await client.get(f"/v1/docs/{doc}/updates", headers=bearer(alice))).json()
    assert page["head"] == 1


async def test_bad_updates_are_refused_and_store_nothing(make_settings, smtp):
    settings = make_settings(max_update_size=1024, max_batch=3)
    async with app_client(create_app(settings)) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        url, auth = f"/v1/docs/{doc}/updates", bearer(me)
        assert_problem(
            await client.post(url, json=updates(b"x" * 1025), headers=auth),
            413,
            "payload-too-large",
        )
        assert_problem(
            await client.post(url, json=updates(b"a", b"b", b"c", b"d"), headers=auth),
            400,
            "validation-failed",
        )
        bad_bodies = [
            {"updates": []},
            {"updates": [{"client_update_id": "a", "key_version": 1, "ciphertext": "not base64!"}]},
            {"updates": [{"client_update_id": "", "key_version": 1, "ciphertext": ""}]},
            {"updates": [{"client_update_id": "a", "key_version": -1, "ciphertext": ""}]},
            {"updates": [{"client_update_id": "a", "key_version": 1}]},
            {"updates": [{"client_update_id": "a", "key_version": 1, "ciphertext": "", "x": 1}]},
            {"updates": [{"client_update_id": "a", "key_version": 1, "ciphertext": ""}] * 2},
        ]
        for body in bad_bodies:
            assert_problem(
                await client.post(url, json=body, headers=auth), 400, "validation-failed"
            )
        r = await client.post(
            url, content=b"\x93\x01", headers=auth | {"Content-Type": "application/msgpack"}
        )
        assert_problem(r, 400, "validation-failed")
        r = await client.post(url, content=b"x", headers=auth | {"Content-Type": "text/plain"})
        assert_problem(r, 415, "unsupported-media-type")
        assert (await client.get(f"/v1/docs/{doc}", headers=auth)).json()["head"] == 0
    assert await count_rows(settings, DocUpdate) == 0


async def test_quotas(make_settings, smtp):
    async with app_client(
        create_app(make_settings(storage_quota=2048, max_docs_per_user=2))
    ) as client:
        me = await sign_in(client, smtp)
        doc, other = await new_doc(client, me), await new_doc(client, me)
        r = await client.post("/v1/docs", json={"kind": "canvas"}, headers=bearer(me))
        assert_problem(r, 413, "quota-exceeded")
        url = f"/v1/docs/{doc}/updates"
        assert (
            await client.post(url, json=updates(b"x" * 1500), headers=bearer(me))
        ).status_code == 200
        r = await client.post(url, json=updates(b"y" * 1000, prefix="more"), headers=bearer(me))
        assert_problem(r, 413, "quota-exceeded")
        # The quota counts every document of the owner.
        r = await client.post(
            f"/v1/docs/{other}/updates", json=updates(b"z" * 1000), headers=bearer(me)
        )
        assert_problem(r, 413, "quota-exceeded")
        assert (
            await client.post(
                f"/v1/docs/{other}/updates", json=updates(b"z" * 500), headers=bearer(me)
            )
        ).status_code == 200


async def test_push_rate_per_device(make_settings, smtp):
    async with app_client(
        create_app(make_settings(push_rate=1, push_burst=3, max_batch=3))
    ) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        url = f"/v1/docs/{doc}/updates"
        ok = await client.post(url, json=updates(b"a", b"b", b"c"), headers=bearer(me))
        assert ok.status_code == 200
        r = await client.post(url, json=updates(b"d", prefix="late"), headers=bearer(me))
        assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) >= 1


async def test_concurrent_resends_of_one_batch_store_it_once(client, smtp, settings):
    """Pushes that meet in one group commit still dedupe by client update id."""
    me = await sign_in(client, smtp)
    doc = await new_doc(client, me)
    answers = await asyncio.gather(
        *(
            client.post(f"/v1/docs/{doc}/updates", json=updates(b"a", b"b"), headers=bearer(me))
            for _ in range(10)
        )
    )
    assert {tuple(a.json()["seqs"]) for a in answers} == {(1, 2)}
    assert await count_rows(settings, DocUpdate) == 2


async def test_a_refused_push_does_not_spoil_the_others_committed_with_it(client, smtp):
    alice, bob = await sign_in(client, smtp), await sign_in(client, smtp)
    doc = await new_doc(client, alice)
    url = f"/v1/docs/{doc}/updates"
    answers = await asyncio.gather(
        *(
            client.post(url, json=updates(b"x", prefix=f"{n}-"), headers=bearer(who))
            for n, who in enumerate([alice, bob] * 5)
        )
    )
    assert [a.status_code for a in answers] == [200, 404] * 5
    seqs = sorted(s for a in answers if a.status_code == 200 for s in a.json()["seqs"])
    assert seqs == [1, 2, 3, 4, 5]


async def test_retrying_a_create_at_the_document_limit_is_still_a_no_op(make_settings, smtp):
    async with app_client(create_app(make_settings(max_docs_per_user=1))) as client:
        me = await sign_in(client, smtp)
        doc_id = str(uuid.uuid4())
        body = {"kind": "canvas", "doc_id": doc_id}
        assert (await client.post("/v1/docs", json=body, headers=bearer(me))).status_code == 201
        assert (await client.post("/v1/docs", json=body, headers=bearer(me))).status_code == 201


@pytest.mark.backend("postgres")
async def test_the_dedupe_lookup_probes_the_index_however_long_the_log(make_settings, smtp):
    """A repeated client update id is found by one index probe per update, even under the
    generic plan that a prepared statement switches to: it must not walk the log (it did,
    and every push cost more as the document grew)."""
    settings = make_settings(push_burst=2000)
    async with app_client(create_app(settings)) as client:
        me = await sign_in(client, smtp)
        doc = await new_doc(client, me)
        for batch in range(10):
            body = updates(*[b"x" * 8] * 200, prefix=f"b{batch}-")
            r = await client.post(f"/v1/docs/{doc}/updates", json=body, headers=bearer(me))
            assert r.status_code == 200, r.text
    doc_id = uuid.UUID(doc)
    engine = create_engine(settings)
    try:
        async with repo.group_transaction(engine) as log:
            driver = log.driver  # type: ignore[attr-defined]
            await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            known = await log.seqs_for([(doc_id, "b3-7"), (doc_id, "b9-199"), (doc_id, "new")])
            read = await driver.fetchval(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
                " FROM pg_stat_xact_user_tables WHERE relname = 'doc_updates'"
            )
    finally:
        await engine.dispose()
    assert known == {(doc_id, "b3-7"): 608, (doc_id, "b9-199"): 2000}
    assert read <= 3, f"{read} rows read to find 3 client update ids"
