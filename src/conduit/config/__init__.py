"""Loading and validating the TOML policy file; the embedded default."""

from conduit.config.default import embedded, local_public_keys
from conduit.config.load import ConfigError, load, parse
from conduit.config.model import (
    AreaConfig,
    AuditConfig,
    ConduitConfig,
    Config,
    DeviceConfig,
    GatewayConfig,
    Grant,
    Limits,
    Obligation,
    Op,
    RoleConfig,
    SiemSink,
    UserConfig,
    ZoneConfig,
)

__all__ = [
    "AreaConfig",
    "AuditConfig",
    "ConduitConfig",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "GatewayConfig",
    "Grant",
    "Limits",
    "Obligation",
    "Op",
    "RoleConfig",
    "SiemSink",
    "UserConfig",
    "ZoneConfig",
    "embedded",
    "load",
    "local_public_keys",
    "parse",
]
