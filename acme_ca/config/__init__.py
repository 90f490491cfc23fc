"""One typed configuration, loaded once: defaults < TOML file < ``ACME_CA_*`` env < CLI flags.

The package's API is :class:`Config`, :class:`ConfigError` and :func:`load_config`; the parts
each do one job: :mod:`.keys` declares every key (its default and doc), :mod:`.load` reads and
coerces them, :mod:`.checks` holds the invariants, :mod:`.pebble` test mode's Pebble
compatibility and :mod:`.reference` writes docs/configuration.md (``acme-ca config-doc``).
Rooms take their own settings dataclass (``va/settings.py`` and the like), which
:mod:`acme_ca.main.settings` builds from the :class:`Config`; nothing re-reads configuration
per request.
"""

from acme_ca.config.base import ConfigError
from acme_ca.config.keys import Config
from acme_ca.config.load import load_config

__all__ = ["Config", "ConfigError", "load_config"]
