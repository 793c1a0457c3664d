from __future__ import annotations

from .procs import ADMIN, snapshot


async def test_events_then_lookup_then_reserve(app_client) -> None:  # type: ignore[no-untyped-def]
    r = await app_client.post(
        "/v1/events", json={"events": [snapshot("S1", "DC1", 1, 10)]}, headers=ADMIN
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["applied"] == 1
    r = await app_client.get("/v1/availability/S1", headers=ADMIN)
    body = await r.json()
    assert body["total_atp"] == 10
    r = await app_client.post(
        "/v1/reservations",
        json={"reservation_id": "r1", "priority": "checkout",
              "lines": [{"sku": "S1", "location": "DC1", "qty": 3}]},
        headers=ADMIN,
    )  # fmt: skip
    assert r.status == 201
    r = await app_client.get("/v1/availability/S1", headers=ADMIN)
    assert (await r.json())["total_atp"] == 7
