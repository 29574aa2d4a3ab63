async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    r = await client.get("/readyz")
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}
