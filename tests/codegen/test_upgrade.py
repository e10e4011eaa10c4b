"""Earlier versions of a command: their classes, upgrade hooks and spec entries."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import uuid

import msgspec
import pytest

from .conftest import assert_lint_and_types_pass, case_package


@pytest.mark.parametrize("models", ["dataclass", "struct"])
def test_previous_versions(models: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    with case_package(tmp_path_factory, "evolving", models) as (root, name):
        shop = importlib.import_module(f"{name}.shop")
        oid = uuid.uuid4()
        v1 = shop.CreateOrderV1(order_id=oid, customer_id="c", legacy=3)
        with pytest.raises(TypeError):
            shop.CreateOrderV1(oid, "c", 3)  # keyword-only
        with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
            v1.legacy = 4  # frozen
        with pytest.raises(msgspec.ValidationError, match="length >= 1"):
            msgspec.json.decode(
                f'{{"order_id": "{oid}", "customer_id": "", "legacy": 1}}', type=shop.CreateOrderV1
            )
        h, ah = shop.ShopHandlers(), shop.ShopAsyncHandlers()
        # step by step: v1 -> v2 (legacy dropped) -> current (channel defaulted)
        v2 = h.upgrade_create_order_v1(v1)
        assert v2 == shop.CreateOrderV2(order_id=oid, customer_id="c")
        assert h.upgrade_create_order_v2(v2) == shop.CreateOrder(order_id=oid, customer_id="c")
        assert asyncio.run(ah.upgrade_create_order_v1(v1)) == v2
        with pytest.raises(NotImplementedError, match=r"ShopHandlers\.upgrade_rename_field_v1 "):
            h.upgrade_rename_field_v1(shop.RenameFieldV1(title="t", size=1))
        with pytest.raises(
            NotImplementedError, match=r"ShopAsyncHandlers\.upgrade_rename_field_v1"
        ):
            asyncio.run(ah.upgrade_rename_field_v1(shop.RenameFieldV1(title="t", size=1)))
        assert h.upgrade_renamed_v1(shop.RenamedV1(title="t")) == shop.Renamed(name="t")
        specs = {c.name: c for c in shop.DOMAIN.commands}
        prev = specs["CreateOrder"].previous
        assert [(p.version, p.type, p.upgrade_method, p.mechanical) for p in prev] == [
            (1, shop.CreateOrderV1, "upgrade_create_order_v1", True),
            (2, shop.CreateOrderV2, "upgrade_create_order_v2", True),
        ]
        assert specs["CreateOrder"].aliases == ("shop.PlaceOrder",)
        (p,) = specs["RenameField"].previous
        assert (p.version, p.upgrade_method, p.mechanical) == (1, "upgrade_rename_field_v1", False)
        assert specs["RenameField"].aliases == ()
        assert_lint_and_types_pass(root, name)
