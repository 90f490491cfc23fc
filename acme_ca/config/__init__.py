"""One typed configuration, loaded once: defaults < TOML file < ``ACME_CA_*`` env < CLI flags.

The package's API is :class:`Config`, :class:`ConfigError` and :func:`load_config`; the parts
each do one job: :mod:`.keys` and :mod:`.keys_service` declare every key (its default and
doc, in one flat dataclass), :mod:`.load` reads and coerces them, :mod:`.checks` holds the
invariants, :mod:`.pebble` test mode's Pebble compatibility and :mod:`.reference` writes
docs/configuration.md (``acme-ca config-doc``).  Rooms take their own frozen settings
(``va/settings.py`` and the like), each built by its ``from_config``, which ``main/`` calls;
nothing re-reads configuration per request.
"""

from acme_ca.config.base import ConfigError
from acme_ca.config.keys import Config
from acme_ca.config.load import load_config

__all__ = ["Config", "ConfigError", "load_config"]
