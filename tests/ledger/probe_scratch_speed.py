from __future__ import annotations
import pytest
from tokenbank import TokenService, InvalidInput

@pytest.mark.parametrize("n", range(60))
async def test_speed(service: TokenService, n: int) -> None:
    await service.open_wallet("alice")
    await service.credit("alice", amount=100)
    with pytest.raises(InvalidInput):
        await service.credit("alice", amount=0)
    assert (await service.audit()).ok
