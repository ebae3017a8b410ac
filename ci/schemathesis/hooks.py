"""Hooks for the API contract run, ci/scripts/api-contract.sh (loaded through SCHEMATHESIS_HOOKS).

Each one covers a rule OpenAPI cannot state; the API tests cover what they leave out.
"""

import schemathesis
from schemathesis.core import NOT_SET


@schemathesis.hook
def filter_case(context, case):
    # An upload without a multipart body is a raw one, which needs `?name=` (a multipart one may name the file in
    # its form instead): a condition between the body and a parameter that the document states in words only.
    if case.operation.method.upper() == "POST" and case.operation.path == "/api/v1/files":
        if case.body is NOT_SET:
            return False
    # A multipart form's fields are text on the wire: a number "sent instead of a string" arrives as its digits,
    # which are a string, so a case whose violation includes a `type` mutation of a form field may break nothing
    # the service can see.
    if case.media_type == "multipart/form-data" and case.meta is not None:
        mutations = getattr(case.meta.phase.data, "mutations", ())
        if any(m.keywords == ("type",) and m.parameter_location.name == "BODY" for m in mutations):
            return False
    return True


@schemathesis.hook
def map_case(context, case):
    # A listing cursor is opaque: only one the service issued is valid, which no schema can say, so every
    # generated one is refused with a 400, rightly. The API tests page with real cursors, and the `cursor` fuzz
    # target feeds the decoder arbitrary text.
    if case.query:
        case.query.pop("cursor", None)
    return case
