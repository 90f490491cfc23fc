"""Deployment shapes and the production invariants (BR/CP fail-closed rules; docs/production.md).

What could be publicly trusted decides what may be relaxed, never a flag an operator can
forget.  The *shape* comes from the issuing hierarchy alone:

* **development**: ``issuers.toml`` says ``acme-ca init`` wrote it (``generated_by``) and every
  root it names (``root`` and ``[roots.*]``) says "Development" in its subject.  ``serve`` on
  the embedded defaults makes one on first start.  The invariants below may be relaxed: each
  failing one is logged once at start as a ``deployment.invariant_relaxed`` warning.
* **production**: any other hierarchy (hand-written, imported from a key ceremony, marker
  without "Development" roots), whatever the database, HSM, listener or ``--test``.  Nothing
  is relaxed: ``serve`` and ``worker`` evaluate every invariant before serving or signing and
  refuse to start (:class:`DeploymentRefused`, listing every failure at once).

The invariants (:data:`INVARIANTS`), evaluated by :func:`assess` and shown by ``acme-ca
check``, are static checks of the configuration and of the files it names; nothing is
contacted.  The date-dependent one (BR 3.2.2.9's number of remote perspectives) is asked again
at every signing through :func:`signing_guard`.
"""

from acme_ca.deployment.assessment import (
    Assessment,
    DeploymentRefused,
    Finding,
    assess,
    deployment_gate,
    render_text,
    signing_guard,
)
from acme_ca.deployment.invariants import (
    INVARIANTS,
    Invariant,
    placeholder_problem,
    weak_key_coverage,
)
from acme_ca.deployment.shape import Shape, hierarchy_shape, says_development

__all__ = [
    "INVARIANTS",
    "Assessment",
    "DeploymentRefused",
    "Finding",
    "Invariant",
    "Shape",
    "assess",
    "deployment_gate",
    "hierarchy_shape",
    "placeholder_problem",
    "render_text",
    "says_development",
    "signing_guard",
    "weak_key_coverage",
]
