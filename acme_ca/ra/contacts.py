"""Account contact policy (RFC 8555 §7.3): ``mailto:`` URLs with one plain address each."""

from __future__ import annotations

import re

from acme_ca.acme import problems
from acme_ca.acme.problems import AcmeError

MAX_CONTACTS = 10
MAX_CONTACT_LENGTH = 254
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_contacts(value: tuple[str, ...]) -> tuple[str, ...]:
    """Return the normalised contacts, or raise invalidContact / unsupportedContact.

    The type (an array of strings) was checked when the message was decoded."""
    if len(value) > MAX_CONTACTS:
        raise AcmeError(problems.invalid_contact(f"at most {MAX_CONTACTS} contacts are allowed"))
    return tuple(_validate_one(c) for c in value)


def _validate_one(contact: str) -> str:
    scheme, sep, address = contact.partition(":")
    if not sep or scheme.lower() != "mailto":
        raise AcmeError(
            problems.unsupported_contact(f"contact {contact!r}: only mailto: URLs are supported")
        )
    if len(contact) > MAX_CONTACT_LENGTH:
        raise AcmeError(problems.invalid_contact("contact is too long"))
    if "?" in address or "," in address or "%" in address:
        raise AcmeError(
            problems.invalid_contact(
                f"contact {contact!r}: one plain address, no header fields or encodings"
            )
        )
    local, at, domain = address.rpartition("@")
    domain = domain.lower()
    if not at or not _LOCAL.match(local) or ".." in local:
        raise AcmeError(problems.invalid_contact(f"contact {contact!r}: invalid mailbox"))
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise AcmeError(problems.invalid_contact(f"contact {contact!r}: invalid domain"))
    return f"mailto:{local}@{domain}"
