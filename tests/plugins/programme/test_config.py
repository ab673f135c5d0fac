"""The `[plugins.programme]` settings: bad values stop the start-up naming the key; the plugin
stays out of the way when it, the shipped schemas or the certificates plugin are off."""

from __future__ import annotations

import pytest

from open_registry.core import Settings, StartupError, open_registry
from open_registry.plugins.programme.config import ProgrammeConfig

PROGRAMME_ENTITIES = {
    "facility_programme",
    "schedule",
    "appointment",
    "stock",
    "stock_threshold",
    "side_effect",
}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"stok": "off"}, "plugins.programme.stok"),
        ({"stock": "sometimes"}, "plugins.programme.stock"),
        ({"timezone": "Mars/Olympus"}, "plugins.programme.timezone"),
        ({"age_bands": "60,18"}, "plugins.programme.age_bands"),
        ({"age_bands": "young,old"}, "plugins.programme.age_bands"),
        ({"low_stock_threshold": "many"}, "plugins.programme.low_stock_threshold"),
        ({"enforce_activation": "perhaps"}, "plugins.programme.enforce_activation"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_key(settings: Settings, values, named):
    with pytest.raises(StartupError, match=named.replace(".", r"\.")):
        open_registry(settings.with_(plugins={"programme": values}), create_tables=False)


def test_settings_from_the_environment_are_converted():
    loaded = Settings.load(
        environ={
            "REGISTRY_PLUGINS__PROGRAMME__STOCK": "required",
            "REGISTRY_PLUGINS__PROGRAMME__LOW_STOCK_THRESHOLD": "7",
            "REGISTRY_PLUGINS__PROGRAMME__TIMEZONE": "+05:30",
        }
    )
    config = ProgrammeConfig.from_settings(loaded)
    assert (config.stock, config.low_stock_threshold) == ("required", 7)
    assert config.age_band(17) == "0-17" and config.age_band(60) == "60+"
    assert config.age_band(None) == "Unknown"


@pytest.mark.parametrize(
    "changes",
    [
        {"plugins": {"programme": {"enabled": "false"}}},
        {"plugins": {"certificates": {"enabled": "false"}}},
    ],
)
def test_the_plugin_can_be_switched_off(settings: Settings, changes):
    reg = open_registry(settings.with_(**changes), create_tables=False)
    try:
        assert not PROGRAMME_ENTITIES & set(reg.schemas.entities)
    finally:
        reg.close()
